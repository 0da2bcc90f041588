package announce

import "time"

// SetClock replaces the clock the client measures backoffs with.
func SetClock(c *Client, now func() time.Time) { c.now = now }
