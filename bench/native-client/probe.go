package main

import (
	"flag"
	"fmt"
	"sync"
	"time"
)

// runProbe is a well-behaved client measuring the service while something else loads the
// server: -samples attempts one after the other (-interval ms apart), each TCP connect + TLS
// handshake + the line echoed (with -gateway: the gateway exchange, each sample a device of its
// own) within -deadline ms, from its own source addresses (attempt i from address i mod 250 of -net).
//
// The result ({"t":"done",...}): every attempt's time in ms (`latencies`, in order; a failed
// attempt counts with the time it took to fail, so a timeout weighs as much as its deadline),
// which of them failed (`failedAt`, indexes) and why (`failed`), their p50/p90/p99/max, and the
// client's CPU and handshakes. Cut short by -max-seconds, it reports the samples taken so far,
// and the attempt then in progress as failed ("unfinished") with the time it had taken.
func runProbe(args []string) {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	o := commonFlags(fs, 300)
	samples := fs.Int("samples", 1000, "attempts, one after the other")
	interval := fs.Int("interval", 0, "ms between the end of one attempt and the start of the next")
	deadline := fs.Int("deadline", 10000, "ms per attempt: connect, handshake and echo")
	parse(fs, o, args)
	if *samples <= 0 {
		fatalf("-samples must be positive")
	}
	cfg := o.tlsConfig()
	var mu sync.Mutex
	latencies := make([]float64, 0, *samples)
	failed := map[string]int{}
	failedAt := []int{}
	var current time.Time // start of the attempt in progress
	watchdog(o, func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		// The attempt in progress took at least this long: it counts, as failed ("unfinished").
		if !current.IsZero() {
			latencies = append(latencies, ms(time.Since(current)))
			failed["unfinished"]++
			failedAt = append(failedAt, len(latencies)-1)
		}
		return probeResult(truncated, latencies, failed, failedAt)
	})
	begin := time.Now()
	last := begin
	for i := 0; i < *samples; i++ {
		mu.Lock()
		current = time.Now()
		mu.Unlock()
		// With -gateway every sample is a device of its own (<prefix>-probe-<i>): a reconnect under
		// the same id would measure the gateway's takeover of the previous session.
		a := o.connectAs(sourceAddress(o.net, i%250), fmt.Sprintf("%s-probe-%d", o.devicePrefix, i), time.Duration(*deadline)*time.Millisecond, cfg, false)
		mu.Lock()
		current = time.Time{}
		latencies = append(latencies, ms(a.latency))
		if !a.ok {
			failed[a.reason]++
			failedAt = append(failedAt, i)
		}
		mu.Unlock()
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			logf("probe: %d/%d samples, %d failed", i+1, *samples, len(failedAt))
		}
		if *interval > 0 {
			time.Sleep(time.Duration(*interval) * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	finish(probeResult(false, latencies, failed, failedAt))
}

func probeResult(truncated bool, latencies []float64, failed map[string]int, failedAt []int) interface{} {
	cost := currentCost()
	var p percentiles
	if ps := percentilesOf(latencies); ps != nil {
		p = *ps
	}
	return map[string]interface{}{
		"t":                 "done",
		"truncated":         truncated,
		"samples":           len(latencies),
		"latencies":         append([]float64{}, latencies...),
		"failed":            failed,
		"failedAt":          append([]int{}, failedAt...),
		"p50":               p.P50,
		"p90":               p.P90,
		"p99":               p.P99,
		"max":               p.Max,
		"cpuUs":             cost.CPUMicros,
		"fullHandshakes":    cost.FullHandshakes,
		"resumedHandshakes": cost.ResumedHandshakes,
	}
}
