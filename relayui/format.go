package relayui

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// timeLayout is how the dashboard writes absolute times: UTC, to the second.
const timeLayout = "2006-01-02 15:04:05 UTC"

// funcs are the helpers templates format with. Each returns plain text, which the
// templates escape: none returns template.HTML or another trusted type.
func (u *ui) funcs() template.FuncMap {
	return template.FuncMap{
		"path":           u.path,
		"ago":            ago,
		"abs":            absTime,
		"dur":            humanDuration,
		"num":            thousands,
		"rate":           rate,
		"pretty":         prettyJSON,
		"short":          short,
		"jobs":           jobs,
		"jobs64":         func(n int64) string { return jobs(int(n)) },
		"hexdump":        hexPreview,
		"backoff":        backoffText,
		"join":           strings.Join,
		"since":          time.Since,
		"len64":          func(b []byte) int64 { return int64(len(b)) },
		"int64":          func(n int) int64 { return int64(n) },
		"deref":          func(s *string) string { return *s },
		"hasString":      slices.Contains[[]string],
		"states":         func() []relay.JobState { return states },
		"queuePath":      func(name string) string { return u.path(queueRel(name)) },
		"queuePathRel":   queueRel,
		"jobPath":        func(id int64) string { return u.path("/jobs/" + strconv.FormatInt(id, 10)) },
		"unschedulePath": scheduleDeleteRel,
		// cards is the argument of the "cards" template.
		"cards": func(c relay.StateCounts, queue string) map[string]any {
			return map[string]any{"Counts": c, "Queue": queue}
		},
		// act is the argument of the "button" template: a form that POSTs to path.
		"act": func(path, label, class, csrf string) map[string]string {
			return map[string]string{"Action": path, "Label": label, "Class": class, "CSRF": csrf}
		},
	}
}

// queueRel is the path of a queue's page inside the dashboard.
func queueRel(name string) string { return "/queues/" + url.PathEscape(name) }

// path is a link inside the dashboard: the prefix, then p.
func (u *ui) path(p string) string { return u.prefix + p }

// ago says how long ago t was, "" for the zero time.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + humanDuration(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return humanDuration(d) + " ago"
}

func absTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// humanDuration rounds d to two units at most: "850 ms", "4.2 s", "3 min 20 s", "2 h 5 min",
// "3 d 4 h".
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + humanDuration(-d)
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return twoUnits(int(d.Minutes()), "min", int(d.Seconds())%60, "s")
	case d < 48*time.Hour:
		return twoUnits(int(d.Hours()), "h", int(d.Minutes())%60, "min")
	default:
		return twoUnits(int(d.Hours())/24, "d", int(d.Hours())%24, "h")
	}
}

func twoUnits(a int, au string, b int, bu string) string {
	if b == 0 {
		return fmt.Sprintf("%d %s", a, au)
	}
	return fmt.Sprintf("%d %s %d %s", a, au, b, bu)
}

// numbers groups the digits of numbers: 12345 → "12,345".
var numbers = message.NewPrinter(language.English)

// thousands writes n with its digits grouped.
func thousands(n int64) string { return numbers.Sprint(n) }

// rate writes jobs per minute: n jobs in window.
func rate(n int64, window time.Duration) string {
	per := float64(n) / window.Minutes()
	switch {
	case n == 0:
		return "0"
	case per < 10:
		return strconv.FormatFloat(per, 'f', 1, 64)
	default:
		return thousands(int64(math.Round(per)))
	}
}

// prettyJSON indents JSON for reading; text that is not JSON is returned as it is.
func prettyJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// short is s cut to n runes.
func short(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// hexPreview dumps the first bytes of a binary payload.
func hexPreview(b []byte) string {
	const n = 256
	if len(b) <= n {
		return hex.Dump(b)
	}
	return hex.Dump(b[:n]) + fmt.Sprintf("… %s more bytes", thousands(int64(len(b)-n)))
}

// backoffText describes a retry policy: "1 s, ×2 per attempt, at most 24 h, ±25 % jitter".
func backoffText(p *backoff.Policy) string {
	s := fmt.Sprintf("%s, ×%s per attempt, at most %s", humanDuration(p.Initial), strconv.FormatFloat(p.Multiplier, 'g', -1, 64), humanDuration(p.Max))
	if p.Jitter > 0 {
		s += fmt.Sprintf(", ±%s %% jitter", strconv.FormatFloat(p.Jitter*100, 'g', 3, 64))
	}
	return s
}
