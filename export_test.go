package relay

import "time"

// PauseLeaseRenewal stops (true) or resumes (false) the keep-alive ticker of a started
// client, as if it were cut off from the database: tests of partitioned workers use it.
func PauseLeaseRenewal(c *Client, paused bool) { c.keeper.Pause(paused) }

// WorkedQueues returns the queues c has a dispatcher for now, so that tests can watch
// dispatchers of groups appear and retire.
func WorkedQueues(c *Client) []string { return c.queues.names() }

// ConnectionLost is connectionLost: whether a handler's error is an infrastructure fault.
var ConnectionLost = connectionLost

// FreeInfraAttempts is the attempt from which infrastructure faults count.
const FreeInfraAttempts = freeInfraAttempts

// CheckUnhandledEvery makes c look for jobs no live client can run every d (and count
// jobs due for d) instead of every minute. Call it before Start.
func CheckUnhandledEvery(c *Client, d time.Duration) { c.unhandledEvery = d }
