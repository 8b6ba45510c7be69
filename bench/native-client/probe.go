package main

import (
	"flag"
	"time"
)

// runProbe is a well-behaved client measuring the service while something else loads the
// server: -samples attempts one after the other (-interval ms apart), each TCP connect + TLS
// handshake + the line echoed within -deadline ms, from its own source addresses (attempt i
// from address i mod 250 of -net).
//
// The result ({"t":"done",...}): every attempt's time in ms (`latencies`, in order; a failed
// attempt counts with the time it took to fail, so a timeout weighs as much as its deadline),
// which of them failed (`failedAt`, indexes) and why (`failed`), their p50/p90/p99/max, and the
// client's CPU and handshakes.
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
	latencies := make([]float64, 0, *samples)
	failed := map[string]int{}
	failedAt := []int{}
	var snapshot func(bool) interface{}
	results := make(chan func(), 1)
	snapshot = func(truncated bool) interface{} {
		// Called by the watchdog from another goroutine: read through the probe loop when it can.
		done := make(chan interface{}, 1)
		select {
		case results <- func() { done <- probeResult(truncated, latencies, failed, failedAt) }:
			return <-done
		case <-time.After(2 * time.Second):
			return map[string]interface{}{"t": "done", "truncated": true, "error": "probe loop busy"}
		}
	}
	watchdog(o, snapshot)
	begin := time.Now()
	last := begin
	for i := 0; i < *samples; i++ {
		select {
		case f := <-results:
			f()
		default:
		}
		a := o.connectOnce(sourceAddress(o.net, i%250), time.Duration(*deadline)*time.Millisecond, cfg, false)
		latencies = append(latencies, ms(a.latency))
		if !a.ok {
			failed[a.reason]++
			failedAt = append(failedAt, i)
		}
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			logf("probe: %d/%d samples, %d failed", i+1, *samples, len(failedAt))
		}
		if *interval > 0 {
			time.Sleep(time.Duration(*interval) * time.Millisecond)
		}
	}
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
