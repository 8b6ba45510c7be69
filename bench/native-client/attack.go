package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kinds of attack connect.
const (
	attackHello     = "hello"     // a replayed ClientHello, then wait for the server's answer: the server's handshake crypto, none of the client's
	attackHandshake = "handshake" // a full crypto/tls handshake, then close
)

// Outcomes of one attack connect.
const (
	outcomeAnswered = "answered" // the server did its handshake: answered the ClientHello (hello) or finished the handshake (handshake)
	outcomeClosed   = "closed"   // the server closed or reset the socket before answering
	outcomeRefused  = "refused"  // the TCP connect was refused
	outcomeDeadline = "deadline" // nothing within -deadline (a full listen queue drops the SYN: the connect times out)
	outcomeError    = "error"    // anything else (e.g. no free local port)
)

// runAttack: one misbehaving client. For -seconds T it opens -rate R TCP connects per second from
// -addresses source addresses (default 1: all from one address, as one attacking host), paced by
// a 1 ms clock whether or not earlier ones are done. Each connect sends a ClientHello and waits,
// within -deadline ms, for the server to answer it (-kind hello: a real crypto/tls ClientHello
// captured once and replayed, so the attacker spends no crypto while the server does all of its
// handshake's; -kind handshake: a whole crypto/tls handshake), then closes with a reset (linger
// 0), so that no TIME_WAIT socket holds one of the address's ports. An arrival the clock reaches
// more than -max-lag ms late is skipped (counted), and so is one that would hold more than
// -max-open sockets. It stops at the end of the window or at "stop" on stdin, whichever comes
// first, waits for the connects in flight (each bounded by -deadline), and prints its result.
//
// The result ({"t":"done",...}): offered (R × T), started, skipped by cause, outcomes
// (answered, closed, refused, deadline, error), the seconds it ran and its achieved rate, how
// long the server took to close (ms from the TCP connect, p50/p90/p99/max, over the closed ones)
// and to answer (over the answered ones), and the client's CPU.
func runAttack(args []string) {
	fs := flag.NewFlagSet("attack", flag.ExitOnError)
	o := commonFlags(fs, 120)
	rate := fs.Float64("rate", 2000, "connects per second")
	seconds := fs.Float64("seconds", 10, "length of the attack (stdin \"stop\" ends it earlier)")
	addresses := fs.Int("addresses", 1, "source addresses the connects come from")
	kind := fs.String("kind", attackHello, "hello | handshake")
	deadline := fs.Int("deadline", 2000, "ms per connect: TCP connect, ClientHello, the server's answer")
	maxOpen := fs.Int("max-open", 15000, "most sockets open at once (under the 20,000 open files of a process)")
	maxLag := fs.Int("max-lag", 200, "ms: a connect started later than this after its due time is skipped")
	parse(fs, o, args)
	if *rate <= 0 || *seconds <= 0 || *addresses <= 0 || *deadline <= 0 {
		fatalf("-rate, -seconds, -addresses and -deadline must be positive")
	}
	if *kind != attackHello && *kind != attackHandshake {
		fatalf("-kind %q: want hello or handshake", *kind)
	}
	if o.maxSeconds < *seconds+float64(*deadline)/1000+5 {
		o.maxSeconds = *seconds + float64(*deadline)/1000 + 5
	}
	cfg := o.tlsConfig()
	var hello []byte
	if *kind == attackHello {
		hello = captureClientHello(cfg)
	}
	window := time.Duration(*seconds * float64(time.Second))
	perConnect := time.Duration(*deadline) * time.Millisecond
	offered := int(*rate * *seconds)

	var (
		mu          sync.Mutex
		started     int
		counts      openLoopCounts
		outcomes    = map[string]int{}
		closedAfter []float64
		answerAfter []float64
		open        atomic.Int64
		stoppedAt   time.Duration
		wg          sync.WaitGroup
	)
	begin := time.Now()
	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		ran := stoppedAt
		if ran == 0 {
			ran = time.Since(begin)
		}
		cost := currentCost()
		return map[string]interface{}{
			"t":                 "done",
			"truncated":         truncated,
			"kind":              *kind,
			"rate":              *rate,
			"addresses":         *addresses,
			"offered":           offered,
			"started":           started,
			"skipped":           map[string]int{"late": counts.skippedLate, "maxOpen": counts.skippedOpen},
			"outcomes":          outcomes,
			"seconds":           round3(ran.Seconds()),
			"startedPerSecond":  round3(float64(started) / ran.Seconds()),
			"closedAfterMs":     percentilesOf(closedAfter),
			"answeredAfterMs":   percentilesOf(answerAfter),
			"maxOpen":           counts.maxOpenSeen,
			"cpuUs":             cost.CPUMicros,
			"fullHandshakes":    cost.FullHandshakes,
			"resumedHandshakes": cost.ResumedHandshakes,
		}
	}
	watchdog(o, snapshot)

	maxLagD := time.Duration(*maxLag) * time.Millisecond
	// connect makes connect i, due at dueAt; how late it is (and so whether it is skipped) is read
	// when its goroutine runs, not when the clock hands it over (see runOverload).
	connect := func(i int, dueAt time.Time) {
		defer wg.Done()
		defer open.Add(-1)
		mu.Lock()
		if time.Since(dueAt) > maxLagD {
			counts.skippedLate++
			mu.Unlock()
			return
		}
		started++
		mu.Unlock()
		outcome, after := attackOnce(o, sourceAddress(o.net, i%*addresses), perConnect, hello, cfg)
		mu.Lock()
		defer mu.Unlock()
		outcomes[outcome]++
		switch outcome {
		case outcomeClosed:
			closedAfter = append(closedAfter, ms(after))
		case outcomeAnswered:
			answerAfter = append(answerAfter, ms(after))
		}
	}

	stop := make(chan struct{})
	go func() {
		waitStop(o, commands(o))
		if o.stdin {
			close(stop)
		}
	}()
	progress := make(chan struct{})
	every(2*time.Second, progress, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("attack: %.1f s, started %d, %v, open %d", time.Since(begin).Seconds(), started, outcomes, open.Load())
	})
	openLoop(begin, *rate, window, offered, maxLagD, int64(*maxOpen), stop, &mu, &counts, &open, &wg, connect)
	mu.Lock()
	stoppedAt = time.Since(begin)
	mu.Unlock()
	wg.Wait()
	close(progress)
	finish(snapshot(false))
}

// attackOnce makes one attack connect from src and says how it ended and when (from the start
// of the TCP connect for a refused or timed-out one; from its completion otherwise).
func attackOnce(o *options, src string, deadline time.Duration, hello []byte, cfg *tls.Config) (string, time.Duration) {
	start := time.Now()
	end := start.Add(deadline)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Deadline: end}
	raw, err := d.Dial("tcp", o.target())
	if err != nil {
		return attackOutcome(err), time.Since(start)
	}
	connected := time.Now()
	// Close with a reset: an attacker keeps no TIME_WAIT socket, so its ports are never the limit.
	_ = raw.(*net.TCPConn).SetLinger(0)
	defer raw.Close()
	_ = raw.SetDeadline(end)
	if hello == nil {
		if err := tls.Client(raw, cfg).Handshake(); err != nil {
			return attackOutcome(err), time.Since(connected)
		}
		handshakesFull.Add(1)
		return outcomeAnswered, time.Since(connected)
	}
	if _, err := raw.Write(hello); err != nil {
		return attackOutcome(err), time.Since(connected)
	}
	// The server writes its whole first flight (ServerHello … Finished, its signature made) at
	// once: any byte back means it has done its handshake's work.
	var buf [4096]byte
	if n, err := raw.Read(buf[:]); n == 0 {
		return attackOutcome(err), time.Since(connected)
	}
	return outcomeAnswered, time.Since(connected)
}

// attackOutcome names how an attack connect failed (classify, with refused and closed apart).
func attackOutcome(err error) string {
	if err == nil {
		return outcomeClosed
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return outcomeRefused
	}
	switch classify(err) {
	case "deadline":
		return outcomeDeadline
	case "closed":
		return outcomeClosed
	}
	return outcomeError
}
