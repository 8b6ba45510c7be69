package main

import (
	"flag"
	"sync"
	"sync/atomic"
	"time"
)

// runOverload: open-loop arrivals. For -seconds T, -rate R new devices arrive per second, paced
// by a 1 ms ticker whether or not earlier ones are done; each has a fresh source address, makes
// one attempt (connect, handshake, echo) within -deadline ms and closes; nothing is retried. An
// arrival the clock reaches more than -max-lag ms after it was due is skipped (counted, not
// started: starting it would be a burst the offered load does not contain; how late is read when
// the arrival's goroutine runs, not when the clock hands it over), and so is one that
// would hold more than -max-open sockets. At the end of the window whatever is still in progress
// is closed and counted as unfinished.
//
// The result ({"t":"done",...}): offered (R × T), started, skipped by cause, succeeded, good
// (succeeded within [-warmup, T]), failed by reason, unfinished, latency percentiles of the
// successes and each success's latency (ms, so that a runner can merge processes), how late the
// clock started arrivals (max, p99), the most sockets open at once, and the client's CPU and
// handshakes.
func runOverload(args []string) {
	fs := flag.NewFlagSet("overload", flag.ExitOnError)
	o := commonFlags(fs, 120)
	rate := fs.Float64("rate", 0, "new devices per second (required)")
	seconds := fs.Float64("seconds", 10, "length of the arrival window")
	deadline := fs.Int("deadline", 5000, "ms per device: connect, handshake and echo")
	warmup := fs.Int("warmup", 1000, "ms at the window's start not counted in `good`")
	maxOpen := fs.Int("max-open", 15000, "most sockets open at once (under the 20,000 open files of a process)")
	maxLag := fs.Int("max-lag", 200, "ms: an arrival started later than this after its due time is skipped")
	parse(fs, o, args)
	if *rate <= 0 {
		fatalf("-rate is required")
	}
	window := time.Duration(*seconds * float64(time.Second))
	if float64(o.maxSeconds) < *seconds+float64(*deadline)/1000+5 {
		o.maxSeconds = *seconds + float64(*deadline)/1000 + 5
	}
	cfg := o.tlsConfig()
	offered := int(*rate * *seconds)

	var (
		mu         sync.Mutex
		latencies  []float64
		failed     = map[string]int{}
		started    int
		lags       []float64
		maxLagSeen time.Duration
		counts     openLoopCounts
		good       int
		succeeded  int
		unfinished int
		open       atomic.Int64
		wg         sync.WaitGroup
	)
	begin := time.Now()
	end := begin.Add(window)
	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		lagPs := percentilesOf(lags)
		var lagP99 float64
		if lagPs != nil {
			lagP99 = lagPs.P99
		}
		cost := currentCost()
		return map[string]interface{}{
			"t":                 "done",
			"truncated":         truncated,
			"rate":              *rate,
			"seconds":           *seconds,
			"offered":           offered,
			"started":           started,
			"skipped":           map[string]int{"late": counts.skippedLate, "maxOpen": counts.skippedOpen},
			"succeeded":         succeeded,
			"good":              good,
			"goodWindowMs":      float64(window.Milliseconds() - int64(*warmup)),
			"failed":            failed,
			"unfinished":        unfinished,
			"latency":           percentilesOf(latencies),
			"latencies":         nonNil(latencies),
			"maxLagMs":          ms(maxLagSeen),
			"lagP99Ms":          lagP99,
			"maxOpen":           counts.maxOpenSeen,
			"cpuUs":             cost.CPUMicros,
			"fullHandshakes":    cost.FullHandshakes,
			"resumedHandshakes": cost.ResumedHandshakes,
		}
	}
	watchdog(o, snapshot)

	maxLagD := time.Duration(*maxLag) * time.Millisecond
	// arrive runs arrival i, due at dueAt. How late it is, and so whether it is skipped, is read
	// here, when its goroutine runs, not when the clock hands it over: with one scheduler thread
	// under load the two can be a second apart, and an arrival started that late would be part of
	// a burst the offered load does not contain, with its lateness counted nowhere.
	arrive := func(i int, dueAt time.Time) {
		defer wg.Done()
		defer open.Add(-1)
		lag := time.Since(dueAt)
		mu.Lock()
		if lag > maxLagD {
			counts.skippedLate++
			mu.Unlock()
			return
		}
		started++
		lags = append(lags, ms(lag))
		if lag > maxLagSeen {
			maxLagSeen = lag
		}
		mu.Unlock()
		left := time.Until(end)
		d := time.Duration(*deadline) * time.Millisecond
		cut := left < d
		if cut {
			d = left
		}
		a := o.connectOnce(sourceAddress(o.net, i), d, cfg, false)
		done := time.Since(begin)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case a.ok && done <= window:
			succeeded++
			latencies = append(latencies, ms(a.latency))
			if done >= time.Duration(*warmup)*time.Millisecond {
				good++
			}
		case a.ok || (cut && a.reason == "deadline"):
			unfinished++
		default:
			failed[a.reason]++
		}
	}

	stop := make(chan struct{})
	every(2*time.Second, stop, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("overload: %.1f s, started %d, succeeded %d, open %d", time.Since(begin).Seconds(), started, succeeded, open.Load())
	})
	openLoop(begin, *rate, window, offered, maxLagD, int64(*maxOpen), nil, &mu, &counts, &open, &wg, arrive)
	wg.Wait()
	close(stop)
	finish(snapshot(false))
}

// runCapacity: closed loop. -concurrency C workers, each from its own source address, repeat
// connect + handshake + echo + close for -seconds T. The result: completed attempts, the rate
// counted after -warmup ms, failures by reason, latency percentiles, and the client's CPU and
// handshakes (so the runner can subtract the client's share of the machine).
func runCapacity(args []string) {
	fs := flag.NewFlagSet("capacity", flag.ExitOnError)
	o := commonFlags(fs, 120)
	concurrency := fs.Int("concurrency", 64, "workers, each one connection at a time")
	seconds := fs.Float64("seconds", 10, "length of the run")
	deadline := fs.Int("deadline", 5000, "ms per attempt")
	warmup := fs.Int("warmup", 1000, "ms at the start not counted in the rate")
	parse(fs, o, args)
	if o.maxSeconds < *seconds+float64(*deadline)/1000+5 {
		o.maxSeconds = *seconds + float64(*deadline)/1000 + 5
	}
	cfg := o.tlsConfig()
	window := time.Duration(*seconds * float64(time.Second))
	warm := time.Duration(*warmup) * time.Millisecond
	var (
		mu        sync.Mutex
		completed int
		counted   int
		failed    = map[string]int{}
		latencies []float64
		wg        sync.WaitGroup
	)
	begin := time.Now()
	var cost0 clientCost
	var costWarm *clientCost
	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		cost := currentCost()
		span := time.Since(begin)
		if span > window {
			span = window
		}
		rate := 0.0
		if span > warm {
			rate = float64(counted) / (span - warm).Seconds()
		}
		out := map[string]interface{}{
			"t":                   "done",
			"truncated":           truncated,
			"concurrency":         *concurrency,
			"seconds":             *seconds,
			"completed":           completed,
			"counted":             counted,
			"handshakesPerSecond": round3(rate),
			"failed":              failed,
			"latency":             percentilesOf(latencies),
			"cpuUs":               cost.CPUMicros - cost0.CPUMicros,
			"fullHandshakes":      cost.FullHandshakes,
			"resumedHandshakes":   cost.ResumedHandshakes,
		}
		if costWarm != nil {
			out["countedCpuUs"] = cost.CPUMicros - costWarm.CPUMicros
		}
		return out
	}
	watchdog(o, snapshot)
	cost0 = currentCost()
	time.AfterFunc(warm, func() {
		c := currentCost()
		mu.Lock()
		costWarm = &c
		mu.Unlock()
	})
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			src := sourceAddress(o.net, w)
			for time.Since(begin) < window {
				left := window - time.Since(begin)
				d := time.Duration(*deadline) * time.Millisecond
				if left < d {
					d = left
				}
				a := o.connectOnce(src, d, cfg, false)
				at := time.Since(begin)
				mu.Lock()
				if a.ok && at <= window {
					completed++
					latencies = append(latencies, ms(a.latency))
					if at >= warm {
						counted++
					}
				} else if !a.ok && at < window {
					failed[a.reason]++
				}
				mu.Unlock()
			}
		}(w)
	}
	stop := make(chan struct{})
	every(2*time.Second, stop, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("capacity: %.1f s, %d completed", time.Since(begin).Seconds(), completed)
	})
	wg.Wait()
	close(stop)
	finish(snapshot(false))
}
