// Command report runs meshauth's benchmarks and writes a short report in
// which every figure is a ratio to a floor measured in the same run.
//
//	go run ./bench/report [-count 3] [-benchtime 1s] [-out bench/out/report.md]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ratio compares a measured benchmark with its floor. Names are
// "package/BenchmarkName/sub" without the -GOMAXPROCS suffix.
type ratio struct {
	what    string
	subject string
	floor   string
	// slower: the figure is subject ns/op over floor ns/op (a cost, lower is
	// better); otherwise floor over subject (a throughput, higher is better).
	slower bool
	target string
}

var ratios = []ratio{
	{"client_credentials tokens/s over HTTP, file store ÷ bare ES256 signs/s", "bench/BenchmarkClientCredentials/store=file", "bench/BenchmarkES256SignFloor", false, ""},
	{"client_credentials tokens/s over HTTP, PostgreSQL store ÷ bare ES256 signs/s", "bench/BenchmarkClientCredentials/store=postgres", "bench/BenchmarkES256SignFloor", false, ""},
	{"keyring Sign ES256 ÷ bare ES256 signature (cost)", "keys/BenchmarkSign/ES256", "keys/BenchmarkSign/ES256-floor", true, ""},
	{"one sidecar applying a revocation delta (verify, deny list with 10,000 held, cache eviction) ÷ the delta's bare signature check (cost)", "jwks/BenchmarkApplyRevocation/apply", "jwks/BenchmarkApplyRevocation/floor", true, ""},
	{"verify ES256, cache miss ÷ bare stdlib check (cost)", "token/BenchmarkVerify/ES256", "token/BenchmarkStdlibVerify/ES256", true, "≤ 1.3"},
	{"verify EdDSA, cache miss ÷ bare stdlib check (cost)", "token/BenchmarkVerify/EdDSA", "token/BenchmarkStdlibVerify/EdDSA", true, "≤ 1.3"},
	{"verify RS256, cache miss ÷ bare stdlib check (cost)", "token/BenchmarkVerify/RS256", "token/BenchmarkStdlibVerify/RS256", true, "≤ 1.3"},
	{"verify, cache hit, no revocations ÷ SHA-256 of the token + map lookup (cost)", "token/BenchmarkAuthenticatorCacheHit/ES256/revocations=0", "token/BenchmarkCacheHitFloor/ES256", true, "≤ 2, 0 allocs"},
	{"verify, cache hit, 10,000 revocations held ÷ SHA-256 of the token + map lookup (cost)", "token/BenchmarkAuthenticatorCacheHit/ES256/revocations=10000", "token/BenchmarkCacheHitFloor/ES256", true, "≤ 2, 0 allocs"},
	{"sidecar requests/s over loopback ÷ bare fasthttp proxy hop requests/s", "bench/BenchmarkProxyHop/sidecar", "bench/BenchmarkProxyHop/floor", false, "≥ 0.7"},
	{"sidecar requests/s, scopes-only route ÷ bare fasthttp proxy hop requests/s", "bench/BenchmarkPolicyHop/scopes", "bench/BenchmarkPolicyHop/floor", false, "≥ 0.85"},
	{"sidecar requests/s, route with a CEL condition and two claim headers ÷ scopes-only route", "bench/BenchmarkPolicyHop/cel", "bench/BenchmarkPolicyHop/scopes", false, "≥ 0.95"},
	{"gRPC unary calls/s through the sidecar (h2c both ways) ÷ bare Go h2c reverse-proxy hop", "bench/BenchmarkGRPCHop/sidecar", "bench/BenchmarkGRPCHop/floor", false, "≥ 0.7"},
	{"WebSocket messages/s through the sidecar's tunnel ÷ straight to the service", "bench/BenchmarkWebSocketHop/sidecar", "bench/BenchmarkWebSocketHop/floor", false, ""},
	{"ext_authz gRPC Check/s ÷ always-allow Check/s", "bench/BenchmarkExtAuthzCheck/meshauth", "bench/BenchmarkExtAuthzCheck/floor", false, "≥ 0.8"},
	{"egress requests/s, warm exchange cache ÷ bare fasthttp proxy hop requests/s", "bench/BenchmarkEgressHop/egress", "bench/BenchmarkEgressHop/floor", false, "≥ 0.7, 0 allocs"},
	{"exchange client, cache hit ÷ SHA-256 of the subject token + map lookup (cost)", "bench/BenchmarkExchangeCacheHit/client", "bench/BenchmarkExchangeCacheHit/floor", true, "≤ 2, 0 allocs"},
	{"uncached token exchanges/s over HTTP ÷ bare ES256 signs/s", "bench/BenchmarkTokenExchange", "bench/BenchmarkES256SignFloor", false, ""},
	{"edge requests/s over loopback, warm dereference cache ÷ sidecar requests/s (same upstream)", "bench/BenchmarkEdgeHop/edge", "bench/BenchmarkEdgeHop/sidecar", false, "≥ 0.8, 0 allocs"},
	{"edge cold dereferences/s (new reference token per request, file store) ÷ uncached token exchanges/s", "bench/BenchmarkEdgeColdDereference", "bench/BenchmarkTokenExchange", false, ""},
	{"introspections/s of a reference token (JSON), file store ÷ client_credentials tokens/s, file store", "bench/BenchmarkIntrospection/store=file/format=json", "bench/BenchmarkClientCredentials/store=file", false, ""},
	{"introspections/s of a reference token (RFC 9701 JWT), file store ÷ client_credentials tokens/s, file store", "bench/BenchmarkIntrospection/store=file/format=jwt", "bench/BenchmarkClientCredentials/store=file", false, ""},
	{"introspections/s of a reference token (JSON), PostgreSQL ÷ client_credentials tokens/s, PostgreSQL", "bench/BenchmarkIntrospection/store=postgres/format=json", "bench/BenchmarkClientCredentials/store=postgres", false, ""},
	{"introspections/s of a reference token (RFC 9701 JWT), PostgreSQL ÷ client_credentials tokens/s, PostgreSQL", "bench/BenchmarkIntrospection/store=postgres/format=jwt", "bench/BenchmarkClientCredentials/store=postgres", false, ""},
	{"signed-in authorizations/s (session cookie: no password, no consent page), file store ÷ first sign-ins/s (login page, argon2id, consent page)", "bench/BenchmarkAuthorize/store=file/session", "bench/BenchmarkAuthorize/store=file/first-sign-in", false, ""},
	{"signed-in authorizations/s (session cookie: no password, no consent page), PostgreSQL ÷ first sign-ins/s (login page, argon2id, consent page)", "bench/BenchmarkAuthorize/store=postgres/session", "bench/BenchmarkAuthorize/store=postgres/first-sign-in", false, ""},
	{"audit Record on the caller's goroutine ÷ bare channel send of the event (cost)", "bench/BenchmarkAuditRecord/record", "bench/BenchmarkAuditRecord/floor", true, "≤ 3, 0 allocs"},
	{"audit events written/s to a file (encoded, chained, synced per batch) ÷ bare ES256 signs/s", "bench/BenchmarkAuditWrite", "bench/BenchmarkES256SignFloor", false, "≥ 2"},
}

// latencies are benchmarks whose p50/p99 (b.ReportMetric) are listed beside
// their floor's, so the latency a hop adds can be read off.
var latencies = []struct{ what, subject, floor string }{
	{"sidecar hop vs bare proxy hop", "bench/BenchmarkProxyHop/sidecar", "bench/BenchmarkProxyHop/floor"},
	{"sidecar hop, CEL route vs scopes-only route", "bench/BenchmarkPolicyHop/cel", "bench/BenchmarkPolicyHop/scopes"},
	{"gRPC call through the sidecar vs bare h2c hop", "bench/BenchmarkGRPCHop/sidecar", "bench/BenchmarkGRPCHop/floor"},
	{"ext_authz Check vs always-allow", "bench/BenchmarkExtAuthzCheck/meshauth", "bench/BenchmarkExtAuthzCheck/floor"},
	{"egress hop (warm cache) vs bare proxy hop", "bench/BenchmarkEgressHop/egress", "bench/BenchmarkEgressHop/floor"},
	{"edge hop (warm cache) vs sidecar hop", "bench/BenchmarkEdgeHop/edge", "bench/BenchmarkEdgeHop/sidecar"},
}

type result struct {
	nsPerOp     []float64
	allocsPerOp float64
	// metrics are the benchmark's own b.ReportMetric figures, such as a
	// ratio it measured by alternating subject and floor in one loop.
	metrics map[string][]float64
}

// pairedRatios are ratios a benchmark measured itself (b.ReportMetric).
var pairedRatios = []struct{ what, bench, metric, target string }{
	{"client_credentials tokens/s over HTTP, file store ÷ bare ES256 signs/s, interleaved", "bench/BenchmarkClientCredentialsPaired/store=file", "tokens/signs", ""},
	{"client_credentials tokens/s over HTTP, PostgreSQL store ÷ bare ES256 signs/s, interleaved", "bench/BenchmarkClientCredentialsPaired/store=postgres", "tokens/signs", "≥ 0.3"},
	{"verify ES256 ÷ bare stdlib check, interleaved in one loop", "bench/BenchmarkVerifyPaired/ES256", "verify/floor", "≤ 1.3"},
	{"verify EdDSA ÷ bare stdlib check, interleaved in one loop", "bench/BenchmarkVerifyPaired/EdDSA", "verify/floor", "≤ 1.3"},
	{"verify RS256 ÷ bare stdlib check, interleaved in one loop", "bench/BenchmarkVerifyPaired/RS256", "verify/floor", "≤ 1.3"},
	{"sidecar requests/s, scopes-only route ÷ bare proxy hop, interleaved", "bench/BenchmarkPolicyHopPaired", "scopes/floor", "≥ 0.85"},
	{"sidecar requests/s, CEL condition and two claim headers ÷ scopes-only route, interleaved", "bench/BenchmarkPolicyHopPaired", "cel/scopes", "≥ 0.95"},
}

// rotations are the deliveries of a key rotation to N subscribed Envoy
// nodes (bench/BenchmarkXDSRotation): absolute times, since a ratio means
// nothing here, beside their floor, one node's resource build.
var rotations = []struct{ nodes, bench string }{
	{"1", "bench/BenchmarkXDSRotation/nodes=1"},
	{"100", "bench/BenchmarkXDSRotation/nodes=100"},
	{"1000", "bench/BenchmarkXDSRotation/nodes=1000"},
}

const rotationFloor = "xds/BenchmarkBuildResources"

// floods are BenchmarkGRPCFlood's runs: a legitimate call while the
// ext_authz or xDS server, with its default limits, is flooded, beside the
// same call without a flood (the floor).
var floods = []struct{ what, subject, floor string }{
	{"ext_authz Check, 10,000 streams held", "bench/BenchmarkGRPCFlood/ext_authz/flood=streams", "bench/BenchmarkGRPCFlood/ext_authz/flood=none"},
	{"ext_authz Check, 64 MiB messages", "bench/BenchmarkGRPCFlood/ext_authz/flood=messages", "bench/BenchmarkGRPCFlood/ext_authz/flood=none"},
	{"ext_authz Check, 10,000 partial messages held", "bench/BenchmarkGRPCFlood/ext_authz/flood=partial", "bench/BenchmarkGRPCFlood/ext_authz/flood=none"},
	{"new xDS node, 10,000 streams held", "bench/BenchmarkGRPCFlood/xds/flood=streams", "bench/BenchmarkGRPCFlood/xds/flood=none"},
	{"new xDS node, 64 MiB messages", "bench/BenchmarkGRPCFlood/xds/flood=messages", "bench/BenchmarkGRPCFlood/xds/flood=none"},
	{"new xDS node, 10,000 partial messages held", "bench/BenchmarkGRPCFlood/xds/flood=partial", "bench/BenchmarkGRPCFlood/xds/flood=none"},
}

var metricPair = regexp.MustCompile(`([\d.]+) ([^\s]+/[^\s]+|(?:p\d+|max)-µs|[a-z-]+-(?:MiB|KiB|%)|refused-[a-z]+|oversized)`)

// propagations are BenchmarkPropagation's events over NATS, each against
// the bare NATS fan-out to as many subscribers.
var propagations = []struct{ what, subject, floor, target string }{
	{"key rotation (immediate), 1 sidecar", "bench/BenchmarkPropagation/nats/rotate/subscribers=1", "bench/BenchmarkPropagation/floor/subscribers=1", ""},
	{"key rotation (immediate), 10 sidecars", "bench/BenchmarkPropagation/nats/rotate/subscribers=10", "bench/BenchmarkPropagation/floor/subscribers=10", ""},
	{"key rotation (immediate), 100 sidecars", "bench/BenchmarkPropagation/nats/rotate/subscribers=100", "bench/BenchmarkPropagation/floor/subscribers=100", "p99 < 50 ms"},
	{"RFC 7009 revocation until refused, 1 sidecar", "bench/BenchmarkPropagation/nats/revoke/subscribers=1", "bench/BenchmarkPropagation/floor/subscribers=1", ""},
	{"RFC 7009 revocation until refused, 10 sidecars", "bench/BenchmarkPropagation/nats/revoke/subscribers=10", "bench/BenchmarkPropagation/floor/subscribers=10", ""},
	{"RFC 7009 revocation until refused, 100 sidecars", "bench/BenchmarkPropagation/nats/revoke/subscribers=100", "bench/BenchmarkPropagation/floor/subscribers=100", "p99 < 50 ms"},
}

// snapshotPropagations are BenchmarkPropagation's revocations with NATS
// down, through the snapshot the sidecars poll every 250 ms.
var snapshotPropagations = []struct{ what, bench string }{
	{"1 sidecar", "bench/BenchmarkPropagation/snapshot/revoke/subscribers=1"},
	{"10 sidecars", "bench/BenchmarkPropagation/snapshot/revoke/subscribers=10"},
	{"100 sidecars", "bench/BenchmarkPropagation/snapshot/revoke/subscribers=100"},
}

func main() {
	count := flag.Int("count", 3, "runs of each benchmark; the median is reported")
	benchtime := flag.String("benchtime", "1s", "go test -benchtime")
	out := flag.String("out", "bench/out/report.md", "report file")
	flag.Parse()

	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(*count), "-benchtime", *benchtime, "./bench/", "./token/", "./jwks/", "./issuer/keys/", "./xds/"}
	fmt.Fprintln(os.Stderr, "go", strings.Join(args, " "))
	var raw bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stdout = io.MultiWriter(&raw, os.Stderr)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "report: benchmarks failed:", err)
		os.Exit(1)
	}
	output := raw.String()
	report := render(parse(&raw), output)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	fmt.Print(report)
	fmt.Fprintln(os.Stderr, "report written to", *out)
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:.*?\s([\d.]+) allocs/op)?`)

// parse reads go test -bench output; keys are "pkgdir/BenchmarkName".
func parse(r io.Reader) map[string]*result {
	results := map[string]*result{}
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = filepath.Base(p)
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := pkg + "/" + m[1]
		res := results[key]
		if res == nil {
			res = &result{}
			results[key] = res
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		res.nsPerOp = append(res.nsPerOp, ns)
		if m[3] != "" {
			res.allocsPerOp, _ = strconv.ParseFloat(m[3], 64)
		}
		for _, mp := range metricPair.FindAllStringSubmatch(line, -1) {
			if mp[2] == "ns/op" || mp[2] == "B/op" || mp[2] == "allocs/op" {
				continue
			}
			if res.metrics == nil {
				res.metrics = map[string][]float64{}
			}
			v, _ := strconv.ParseFloat(mp[1], 64)
			res.metrics[mp[2]] = append(res.metrics[mp[2]], v)
		}
	}
	return results
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func render(results map[string]*result, raw string) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# meshauth benchmark report\n\n%s on %s. Medians of the runs; each figure is a ratio to a floor from the same run.\n\n", time.Now().UTC().Format(time.RFC3339), host)
	b.WriteString("| figure | subject ns/op | floor ns/op | ratio | target |\n|---|---|---|---|---|\n")
	for _, r := range ratios {
		s, f := results[r.subject], results[r.floor]
		if s == nil || f == nil {
			fmt.Fprintf(&b, "| %s | not run | | | %s |\n", r.what, r.target)
			continue
		}
		sm, fm := median(s.nsPerOp), median(f.nsPerOp)
		v := fm / sm
		if r.slower {
			v = sm / fm
		}
		fmt.Fprintf(&b, "| %s | %.0f (%.0f allocs) | %.0f | %.2f× | %s |\n", r.what, sm, s.allocsPerOp, fm, v, r.target)
	}
	for _, p := range pairedRatios {
		r := results[p.bench]
		if r == nil || len(r.metrics[p.metric]) == 0 {
			fmt.Fprintf(&b, "| %s | not run | | | %s |\n", p.what, p.target)
			continue
		}
		fmt.Fprintf(&b, "| %s | | | %.2f× | %s |\n", p.what, median(r.metrics[p.metric]), p.target)
	}
	b.WriteString("\n| latency under load | subject p50 / p99 µs | floor p50 / p99 µs | added p50 / p99 µs |\n|---|---|---|---|\n")
	for _, l := range latencies {
		sr, fr := results[l.subject], results[l.floor]
		if sr == nil || fr == nil || len(sr.metrics["p50-µs"]) == 0 || len(fr.metrics["p50-µs"]) == 0 {
			fmt.Fprintf(&b, "| %s | not run | | |\n", l.what)
			continue
		}
		s50, s99 := median(sr.metrics["p50-µs"]), median(sr.metrics["p99-µs"])
		f50, f99 := median(fr.metrics["p50-µs"]), median(fr.metrics["p99-µs"])
		fmt.Fprintf(&b, "| %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |\n", l.what, s50, s99, f50, f99, s50-f50, s99-f99)
	}
	b.WriteString("\n| key rotation → new snapshot received, per subscribed Envoy node | p50 µs | p99 µs | max µs | per rotation ms | per node µs |\n|---|---|---|---|---|---|\n")
	for _, r := range rotations {
		res := results[r.bench]
		if res == nil || len(res.metrics["p50-µs"]) == 0 {
			fmt.Fprintf(&b, "| %s nodes | not run | | | | |\n", r.nodes)
			continue
		}
		fmt.Fprintf(&b, "| %s nodes | %.0f | %.0f | %.0f | %.1f | %.1f |\n", r.nodes, median(res.metrics["p50-µs"]), median(res.metrics["p99-µs"]),
			median(res.metrics["max-µs"]), median(res.nsPerOp)/1e6, median(res.metrics["µs/node"]))
	}
	if f := results[rotationFloor]; f != nil {
		fmt.Fprintf(&b, "| floor: one node's resources built (JWKS, validation, snapshot) | | | | %.3f | |\n", median(f.nsPerOp)/1e6)
	}
	b.WriteString("\n| propagation to all subscribers | p50 / p99 / max ms | bare NATS fan-out p50 / p99 ms | p99 ÷ fan-out p99 | target |\n|---|---|---|---|---|\n")
	for _, p := range propagations {
		sr, fr := results[p.subject], results[p.floor]
		if sr == nil || fr == nil || len(sr.metrics["p99-µs"]) == 0 || len(fr.metrics["p99-µs"]) == 0 {
			fmt.Fprintf(&b, "| %s | not run | | | %s |\n", p.what, p.target)
			continue
		}
		ms := func(r *result, m string) float64 { return median(r.metrics[m]) / 1000 }
		fmt.Fprintf(&b, "| %s | %.1f / %.1f / %.1f | %.2f / %.2f | %.1f× | %s |\n", p.what,
			ms(sr, "p50-µs"), ms(sr, "p99-µs"), ms(sr, "max-µs"), ms(fr, "p50-µs"), ms(fr, "p99-µs"), ms(sr, "p99-µs")/ms(fr, "p99-µs"), p.target)
	}
	b.WriteString("\n| RFC 7009 revocation until refused, NATS down (snapshot polled every 250 ms) | p50 / p99 / max ms | target |\n|---|---|---|\n")
	for _, p := range snapshotPropagations {
		r := results[p.bench]
		if r == nil || len(r.metrics["p99-µs"]) == 0 {
			fmt.Fprintf(&b, "| %s | not run | ≤ 1250 ms |\n", p.what)
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f / %.0f / %.0f | ≤ 1250 ms |\n", p.what, median(r.metrics["p50-µs"])/1000, median(r.metrics["p99-µs"])/1000, median(r.metrics["max-µs"])/1000)
	}
	b.WriteString("\n| legitimate call during a flood | p50 / p99 µs (no flood) | failed | server peak RSS MiB (no flood) | refused streams / connections / oversized messages | log KiB |\n|---|---|---|---|---|---|\n")
	for _, f := range floods {
		sr, fr := results[f.subject], results[f.floor]
		if sr == nil || fr == nil || len(sr.metrics["peak-rss-MiB"]) == 0 || len(fr.metrics["p50-µs"]) == 0 {
			fmt.Fprintf(&b, "| %s | not run | | | | |\n", f.what)
			continue
		}
		m := func(r *result, name string) float64 { return median(r.metrics[name]) }
		fmt.Fprintf(&b, "| %s | %.0f / %.0f (%.0f / %.0f) | %.2f%% | %.0f (%.0f) | %.0f / %.0f / %.0f | %.1f |\n", f.what,
			m(sr, "p50-µs"), m(sr, "p99-µs"), m(fr, "p50-µs"), m(fr, "p99-µs"), m(sr, "failed-%"), m(sr, "peak-rss-MiB"), m(fr, "peak-rss-MiB"),
			m(sr, "refused-streams"), m(sr, "refused-conns"), m(sr, "oversized"), m(sr, "log-KiB"))
	}
	b.WriteString("\n<details><summary>raw go test output</summary>\n\n```\n" + raw + "```\n</details>\n")
	return b.String()
}
