package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay/relayui"
)

type uiCmd struct {
	DatabaseURL string `name:"database-url" env:"DATABASE_URL" required:"" help:"PostgreSQL connection URL."`
	Schema      string `default:"relay" help:"Schema relay's tables live in."`
	Listen      string `default:"127.0.0.1:8080" help:"Address to serve on. The default is reachable from this machine only; anything else needs --basic-auth or a proxy that authenticates."`
	ReadOnly    bool   `name:"read-only" help:"Hide every action and refuse every change."`
	BasicAuth   string `name:"basic-auth" env:"RELAY_UI_BASIC_AUTH" placeholder:"USER:PASSWORD" help:"Ask for this user and password (HTTP basic authentication). Prefer the environment variable: a flag is visible to every user of the machine."`
}

func (u *uiCmd) Run(ctx context.Context, logger *slog.Logger) error {
	var user, password string
	if u.BasicAuth != "" {
		var ok bool
		if user, password, ok = strings.Cut(u.BasicAuth, ":"); !ok || user == "" || password == "" {
			return errors.New("--basic-auth must be USER:PASSWORD, both non-empty")
		}
	}
	pool, err := pgxpool.New(ctx, u.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	ln, err := net.Listen("tcp", u.Listen)
	if err != nil {
		return err
	}
	var h http.Handler = relayui.Handler(pool, relayui.Options{Schema: u.Schema, ReadOnly: u.ReadOnly, Logger: logger})
	if user != "" {
		h = basicAuth(h, user, password)
	} else if ip, ok := ln.Addr().(*net.TCPAddr); ok && !ip.IP.IsLoopback() {
		logger.Warn("the dashboard is reachable from other machines without authentication: set --basic-auth (or RELAY_UI_BASIC_AUTH), or put it behind a proxy that authenticates", "addr", ln.Addr().String())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("dashboard serving", "url", "http://"+ln.Addr().String()+"/", "addr", ln.Addr().String(), "read_only", u.ReadOnly)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// basicAuth lets through only requests with user and password. Both are compared as
// digests in constant time, so timing tells nothing about them, not even their length.
func basicAuth(next http.Handler, user, password string) http.Handler {
	want := sha256.Sum256([]byte(user + "\x00" + password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		got := sha256.Sum256([]byte(u + "\x00" + p))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="relay", charset="UTF-8"`)
			http.Error(w, "relay: authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
