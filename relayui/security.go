package relayui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
)

// contentSecurityPolicy allows the dashboard's own scripts, styles and images and
// nothing else: no inline script or style, no other origin, no framing. Escaping keeps
// job data out of the markup; this keeps anything that slipped through from running.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure strips the prefix and wraps every response in the dashboard's security headers,
// and refuses cross-origin state-changing requests before any handler sees them.
func (u *ui) secure(next http.Handler) http.Handler {
	crossOrigin := http.NewCrossOriginProtection()
	crossOrigin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "relayui: cross-origin request refused", http.StatusForbidden)
	}))
	inner := crossOrigin.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if u.prefix != "" {
			path, ok := strings.CutPrefix(r.URL.Path, u.prefix)
			if !ok || (path != "" && path[0] != '/') {
				http.NotFound(w, r)
				return
			}
			if path == "" {
				http.Redirect(w, r, u.prefix+"/", http.StatusMovedPermanently)
				return
			}
			r2 := *r
			url := *r.URL
			// Keep the escaped form too: a queue named "a/b" travels as a%2Fb in one
			// path segment.
			url.Path, url.RawPath = path, strings.TrimPrefix(r.URL.RawPath, u.prefix)
			r2.URL = &url
			r = &r2
		}
		inner.ServeHTTP(w, r)
	})
}

// csrf makes and checks the tokens of the dashboard's forms. A browser holds a random
// value in a cookie only the dashboard's path sees (HttpOnly, SameSite=Strict); every form
// carries that value's HMAC under the dashboard's key. Another site can neither read the
// cookie nor compute the token, and a token is worth nothing without its cookie.
type csrf struct{ key []byte }

const (
	csrfCookie = "relayui_csrf"
	csrfField  = "csrf_token"
)

// token returns the form token for r's browser, setting its cookie first if it has none.
func (c csrf) token(w http.ResponseWriter, r *http.Request, path string) string {
	if ck, err := r.Cookie(csrfCookie); err == nil && validNonce(ck.Value) {
		return c.sign(ck.Value)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	nonce := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: nonce, Path: path, HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	return c.sign(nonce)
}

// valid reports whether r carries a token that matches its cookie.
func (c csrf) valid(r *http.Request) bool {
	ck, err := r.Cookie(csrfCookie)
	if err != nil || !validNonce(ck.Value) {
		return false
	}
	got := r.PostFormValue(csrfField)
	return hmac.Equal([]byte(got), []byte(c.sign(ck.Value)))
}

func (c csrf) sign(nonce string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func validNonce(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}
