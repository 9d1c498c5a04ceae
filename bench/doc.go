// Package bench holds meshauth's benchmarks. Every figure is reported as a
// ratio against a floor measured in the same run (a bare stdlib signature, a
// bare proxy hop), because the machines are shared and absolute times drift.
// `make bench` runs them through ./report, which writes the report.
package bench
