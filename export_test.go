package relay

// PauseLeaseRenewal stops (true) or resumes (false) the keep-alive ticker of a started
// client, as if it were cut off from the database: tests of partitioned workers use it.
func PauseLeaseRenewal(c *Client, paused bool) { c.keeper.Pause(paused) }
