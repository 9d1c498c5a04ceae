//go:build race

package proxy

// raceEnabled: the race detector drops pooled objects on purpose, so
// allocation bounds do not hold.
const raceEnabled = true
