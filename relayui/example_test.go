package relayui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay/relayui"
)

// requireAdmin stands for the application's own authentication.
func requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "admin" || pass != "secret" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// The dashboard mounted under /admin/jobs of an application's own server, behind the
// application's authentication.
func ExampleHandler() {
	pool, err := pgxpool.New(context.Background(), "postgres://localhost/app") // connects on first use
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	mux := http.NewServeMux()
	ui := relayui.Handler(pool, relayui.Options{Prefix: "/admin/jobs", ReadOnly: true})
	mux.Handle("/admin/jobs/", requireAdmin(ui))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, _ := http.Get(srv.URL + "/admin/jobs/static/favicon.svg")
	fmt.Println("anonymous:", resp.Status)
	req, _ := http.NewRequest("GET", srv.URL+"/admin/jobs/static/favicon.svg", nil)
	req.SetBasicAuth("admin", "secret")
	resp, _ = http.DefaultClient.Do(req)
	fmt.Println("admin:", resp.Status, resp.Header.Get("X-Frame-Options"))
	// Output:
	// anonymous: 403 Forbidden
	// admin: 200 OK DENY
}
