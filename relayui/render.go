package relayui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"sync"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFS embed.FS

// view is what every page's template receives: the page's own data in Data, and what the
// layout needs.
type view struct {
	Title    string
	Nav      string // which navigation entry is current
	Template string // the page's template file
	CSRF     string // the token every form carries
	ReadOnly bool
	Schema   string
	Refresh  bool   // the page's live parts refresh themselves
	Notice   string // what the action that led here did
	Static   map[string]string
	Data     any
}

// httpError is an error a page shows with its own status and message.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

type pageFunc func(r *http.Request, v *view) error

// page serves a page: fn fills the view, and the page's template renders it.
func (u *ui) page(fn pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := u.newView(w, r)
		if err := fn(r, v); err != nil {
			u.fail(w, r, v, err)
			return
		}
		u.render(w, http.StatusOK, v)
	}
}

// newView is the view of a request, before its page fills it in.
func (u *ui) newView(w http.ResponseWriter, r *http.Request) *view {
	return &view{
		CSRF:     u.csrf.token(w, r, u.path("/")),
		ReadOnly: u.opts.ReadOnly, Schema: u.opts.Schema, Static: staticURLs(),
		Notice: notice(r.URL.Query()),
	}
}

// fail shows err: an httpError with its status, anything else as a server error.
func (u *ui) fail(w http.ResponseWriter, r *http.Request, v *view, err error) {
	status := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		status = he.status
	} else {
		u.opts.Logger.ErrorContext(r.Context(), "relayui: "+err.Error(), "path", r.URL.Path)
	}
	v.Title, v.Template, v.Refresh, v.Data = http.StatusText(status), "error.html", false, err.Error()
	u.render(w, status, v)
}

func (u *ui) render(w http.ResponseWriter, status int, v *view) {
	var b bytes.Buffer
	err := fmt.Errorf("no template %q", v.Template)
	if t, ok := u.pages[v.Template]; ok {
		err = t.ExecuteTemplate(&b, "layout", v)
	}
	if err != nil {
		u.opts.Logger.Error("relayui: render "+v.Template, "err", err)
		http.Error(w, "relayui: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store") // pages hold job data
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// parseTemplates parses the layout with each page's template.
func (u *ui) parseTemplates() (map[string]*template.Template, error) {
	parsed := map[string]*template.Template{}
	pages, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := path.Base(p)
		if name == "layout.html" {
			continue
		}
		t, err := template.New(name).Funcs(u.funcs()).ParseFS(templateFiles, "templates/layout.html", p)
		if err != nil {
			return nil, err
		}
		parsed[name] = t
	}
	return parsed, nil
}

// staticURLs maps each static file to its URL path with a digest of its content, so
// browsers may keep it for as long as they like.
var staticURLs = sync.OnceValue(func() map[string]string {
	urls := map[string]string{}
	entries, _ := fs.ReadDir(staticFS, "static")
	for _, e := range entries {
		b, _ := fs.ReadFile(staticFS, "static/"+e.Name())
		sum := sha256.Sum256(b)
		urls[e.Name()] = "/static/" + e.Name() + "?v=" + hex.EncodeToString(sum[:6])
	}
	return urls
})

func staticFiles() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		files.ServeHTTP(w, r)
	})
}
