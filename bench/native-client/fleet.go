package main

import (
	"flag"
	"sync"
	"time"
)

// runFleet: well-behaved devices arriving at a steady rate. -devices N devices start -rate R per
// second (paced from the start; a device the clock reaches late starts late, and its lag is
// recorded), device i from source address i mod -addresses, so each address connects R ÷
// addresses times a second. Each device makes one attempt (TCP connect, TLS handshake, the line
// echoed) within -deadline ms, then closes; nothing is retried. It ends when every device has
// succeeded or failed: at most N ÷ R seconds plus one deadline.
//
// The result ({"t":"done",...}): devices, started, succeeded, failed by reason, each success's
// latency (ms, so that a runner can merge processes) and their percentiles, the percentiles of
// its parts over the successes (TCP connect; TLS handshake after it; echo after that), how late the clock
// started devices (ms: max, p99), the seconds it ran, and the client's CPU and handshakes.
func runFleet(args []string) {
	fs := flag.NewFlagSet("fleet", flag.ExitOnError)
	o := commonFlags(fs, 120)
	devices := fs.Int("devices", 0, "devices, each connecting once (required)")
	rate := fs.Float64("rate", 100, "devices started per second")
	addresses := fs.Int("addresses", 50, "source addresses the devices share (device i uses address i mod addresses)")
	deadline := fs.Int("deadline", 5000, "ms per device: connect, handshake and echo")
	parse(fs, o, args)
	if *devices <= 0 || *rate <= 0 || *addresses <= 0 || *deadline <= 0 {
		fatalf("-devices, -rate, -addresses and -deadline must be positive")
	}
	if bound := float64(*devices) / *rate + float64(*deadline)/1000 + 5; o.maxSeconds < bound {
		o.maxSeconds = bound
	}
	cfg := o.tlsConfig()
	perDevice := time.Duration(*deadline) * time.Millisecond

	var (
		mu        sync.Mutex
		started   int
		succeeded int
		failed    = map[string]int{}
		latencies []float64
		stages    = map[string][]float64{}
		lags      []float64
		wg        sync.WaitGroup
	)
	begin := time.Now()
	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		var lagMax, lagP99 float64
		if p := percentilesOf(lags); p != nil {
			lagMax, lagP99 = p.Max, p.P99
		}
		cost := currentCost()
		return map[string]interface{}{
			"t":         "done",
			"truncated": truncated,
			"devices":   *devices,
			"rate":      *rate,
			"addresses": *addresses,
			"started":   started,
			"succeeded": succeeded,
			"failed":    failed,
			"latency":   percentilesOf(latencies),
			"latencies": nonNil(latencies),
			"stages": map[string]*percentiles{
				"connect":   percentilesOf(stages["connect"]),
				"handshake": percentilesOf(stages["handshake"]),
				"echo":      percentilesOf(stages["echo"]),
			},
			"maxLagMs":          lagMax,
			"lagP99Ms":          lagP99,
			"seconds":           round3(time.Since(begin).Seconds()),
			"cpuUs":             cost.CPUMicros,
			"fullHandshakes":    cost.FullHandshakes,
			"resumedHandshakes": cost.ResumedHandshakes,
		}
	}
	watchdog(o, snapshot)

	stop := make(chan struct{})
	every(2*time.Second, stop, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("fleet: %.1f s, started %d, succeeded %d, failed %v", time.Since(begin).Seconds(), started, succeeded, failed)
	})
	for i := 0; i < *devices; i++ {
		due := waitTurn(begin, i, *rate)
		mu.Lock()
		started++
		lags = append(lags, ms(time.Since(due)))
		mu.Unlock()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a := o.connectOnce(sourceAddress(o.net, i%*addresses), perDevice, cfg, false)
			mu.Lock()
			defer mu.Unlock()
			if a.ok {
				succeeded++
				latencies = append(latencies, ms(a.latency))
				stages["connect"] = append(stages["connect"], ms(a.connected))
				stages["handshake"] = append(stages["handshake"], ms(a.handshake-a.connected))
				stages["echo"] = append(stages["echo"], ms(a.latency-a.handshake))
			} else {
				failed[a.reason]++
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	finish(snapshot(false))
}
