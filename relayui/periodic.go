package relayui

import (
	"net/http"
	"net/url"

	"github.com/relayq/relay"
)

type periodicData struct {
	Schedules []relay.ScheduleInfo
	Orphaned  int
}

// periodic lists the periodic schedules (relay.ListSchedules: one statement over the
// small periodic and clients tables), orphaned ones marked with what to do about them.
func (u *ui) periodic(r *http.Request, v *view) error {
	v.Title, v.Nav, v.Template, v.Refresh = "Periodic schedules", "periodic", "periodic.html", true
	list, err := relay.ListSchedules(r.Context(), u.db, u.schema)
	if err != nil {
		return err
	}
	d := periodicData{Schedules: list}
	for _, s := range list {
		if s.Orphaned {
			d.Orphaned++
		}
	}
	v.Data = d
	return nil
}

// scheduleDeleteRel is the path of a schedule's delete action inside the dashboard.
func scheduleDeleteRel(name string) string { return "/periodic/" + url.PathEscape(name) + "/delete" }
