package relay

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/store"
)

// Config configures a [Client]. The zero value is ready to use: schema "relay", the
// "default" queue with 100 workers, a 2 s fallback poll, and [backoff.Default] retries.
type Config struct {
	// Schema is the PostgreSQL schema relay's tables live in; default [DefaultSchema].
	Schema string
	// Queues are the queues this client works, by name, each with its own limit on
	// concurrent jobs. Default: {"default": {Workers: 100}}.
	Queues map[string]QueueConfig
	// PollInterval is how often each queue looks for work even without a wakeup. Wakeups
	// come by NOTIFY, so this only bounds the delay of a notification lost while the
	// listener was reconnecting; default [DefaultPollInterval].
	PollInterval time.Duration
	// Backoff spaces the retries of failed attempts; default [backoff.Default].
	Backoff backoff.Policy
	// Logger receives relay's logs; default slog.Default().
	Logger *slog.Logger
	// ID names this client in the jobs it claims (attempted_by) and in pg_stat_activity;
	// default "<hostname>-<pid>-<random>".
	ID string
}

// QueueConfig configures one queue of a client.
type QueueConfig struct {
	// Workers is the most jobs of this queue this client runs at once (at least 1).
	Workers int
}

// withDefaults fills in defaults and rejects what cannot run.
func (c Config) withDefaults() (Config, error) {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if err := store.ValidateSchema(c.Schema); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if len(c.Queues) == 0 {
		c.Queues = map[string]QueueConfig{DefaultQueue: {Workers: DefaultWorkers}}
	}
	for name, q := range c.Queues {
		if err := validateName("queue", name); err != nil {
			return c, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		if q.Workers < 1 {
			return c, fmt.Errorf("%w: queue %q has %d workers; it needs at least 1", ErrInvalidConfig, name, q.Workers)
		}
	}
	switch {
	case c.PollInterval == 0:
		c.PollInterval = DefaultPollInterval
	case c.PollInterval < 0:
		return c, fmt.Errorf("%w: PollInterval is negative (%v)", ErrInvalidConfig, c.PollInterval)
	}
	if c.Backoff == (backoff.Policy{}) {
		c.Backoff = backoff.Default()
	}
	if err := c.Backoff.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
