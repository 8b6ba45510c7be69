package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"io"
	"math/rand"
	"sort"
	"strconv"
	"sync"
	"time"
)

// runUplink: the gateway's uplink as examples/amqp-gateway's simulator (corral-simulate) drives
// it, at a fraction of the simulator's CPU. -devices N devices start -rate R per second (paced
// from the start), device i from source address i; each connects (TCP, TLS, hello → welcome
// within -connect-timeout ms), then writes its -msgs messages at once, each message a write (a
// TLS record) of its own, as the simulator does with --interval 0, and reads their acks. A
// failed connect is retried after 1 s × 2ⁿ (cap 30 s) × [0.5, 1.5), n the failures since its
// last welcome; a connection lost before every message was answered is opened again the same
// way, and what was not answered is sent again (same ids: at least once). A device that has its
// answers keeps its connection open until every device has them (closing would add the
// gateway's disconnect work to the measurement), then every connection is closed.
//
// Progress goes to stderr once a second in the simulator's format ("[t s] connected C/N, acks
// A/M, ..."), so that a runner can read either. The result ({"t":"done",...}, one line on
// stdout) has the simulator's summary fields (connected = devices welcomed at least once,
// failed = connect attempts that failed, acks, nacks, p50Ms / p99Ms of each message's send →
// answer, msgsPerSecond = acks ÷ (last answer − first message sent), complete, errors by cause)
// and the client's own CPU and handshakes.
func runUplink(args []string) {
	fs := flag.NewFlagSet("uplink", flag.ExitOnError)
	o := commonFlags(fs, 600)
	o.gateway = gatewayHello // the exchange of a connect; the messages follow it here
	devices := fs.Int("devices", 0, "devices (required)")
	rate := fs.Float64("rate", 1000, "devices started per second")
	msgs := fs.Int("msgs", 50, "messages per device, all written at once after the welcome")
	connectTimeout := fs.Int("connect-timeout", 10_000, "ms for one connect attempt: TCP, TLS handshake, hello → welcome (the simulator's 10 s)")
	parse(fs, o, args)
	if o.gateway != gatewayHello {
		fatalf("uplink speaks the gateway protocol only (-gateway hello, the default)")
	}
	if *devices <= 0 || *rate <= 0 || *msgs <= 0 || *connectTimeout <= 0 {
		fatalf("-devices, -rate, -msgs and -connect-timeout must be positive")
	}
	cfg := o.tlsConfig()

	var (
		mu            sync.Mutex
		connectedNow  int
		everConnected int
		failed        int
		disconnects   int
		acks          int
		nacks         int
		finished      int
		errs          = map[string]int{}
		latencies     = make([]float64, 0, *devices**msgs)
		firstSent     time.Time
		lastAnswer    time.Time
		release       = make(chan struct{})
		allDone       = make(chan struct{})
		wg            sync.WaitGroup
	)
	begin := time.Now()
	expected := *devices * *msgs
	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		var perSecond interface{}
		if !firstSent.IsZero() && lastAnswer.After(firstSent) {
			perSecond = round3(float64(acks) / lastAnswer.Sub(firstSent).Seconds())
		}
		var p50, p99 interface{}
		if p := percentilesOf(latencies); p != nil {
			p50, p99 = p.P50, p.P99
		}
		cost := currentCost()
		return map[string]interface{}{
			"t":                 "done",
			"truncated":         truncated,
			"devices":           *devices,
			"connected":         everConnected,
			"failed":            failed,
			"disconnects":       disconnects,
			"acks":              acks,
			"nacks":             nacks,
			"expected":          expected,
			"p50Ms":             p50,
			"p99Ms":             p99,
			"msgsPerSecond":     perSecond,
			"durationMs":        time.Since(begin).Milliseconds(),
			"complete":          !truncated && everConnected == *devices && acks == expected,
			"errors":            errs,
			"seconds":           round3(time.Since(begin).Seconds()),
			"cpuUs":             cost.CPUMicros,
			"fullHandshakes":    cost.FullHandshakes,
			"resumedHandshakes": cost.ResumedHandshakes,
		}
	}
	watchdog(o, snapshot)

	stop := make(chan struct{})
	every(time.Second, stop, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("[%.1f s] connected %d/%d, acks %d/%d, nacks %d, failed %d, disconnects %d",
			time.Since(begin).Seconds(), connectedNow, *devices, acks, expected, nacks, failed, disconnects)
	})

	// device runs one device until its messages are answered, then holds its connection open
	// until release is closed.
	device := func(i int) {
		defer wg.Done()
		src := sourceAddress(o.net, i)
		id := o.deviceID(src)
		sent := map[int]time.Time{} // seq → when last written, while unanswered
		next, answered, failures := 0, 0, 0
		welcomed := false
		for {
			a := o.connectAs(src, id, time.Duration(*connectTimeout)*time.Millisecond, cfg, true)
			if !a.ok {
				mu.Lock()
				failed++
				errs[a.reason]++
				mu.Unlock()
				time.Sleep(backoff(time.Second, 30*time.Second, failures))
				failures++
				continue
			}
			failures = 0
			conn := a.conn
			mu.Lock()
			connectedNow++
			if !welcomed {
				welcomed = true
				everConnected++
			}
			mu.Unlock()
			lost := exchangeUplink(conn, *msgs, &next, &answered, sent, func(seq int, at time.Time) {
				mu.Lock()
				if firstSent.IsZero() || at.Before(firstSent) {
					firstSent = at
				}
				mu.Unlock()
			}, func(latency time.Duration, nack string) {
				mu.Lock()
				defer mu.Unlock()
				lastAnswer = time.Now()
				if nack == "" {
					acks++
					latencies = append(latencies, ms(latency))
				} else {
					nacks++
					errs["nack:"+nack]++
				}
			})
			if lost == "" {
				mu.Lock()
				finished++
				if finished == *devices {
					close(allDone)
				}
				mu.Unlock()
				<-release
				_ = conn.Close()
				mu.Lock()
				connectedNow--
				mu.Unlock()
				return
			}
			_ = conn.Close()
			mu.Lock()
			connectedNow--
			disconnects++
			errs[lost]++
			mu.Unlock()
			time.Sleep(backoff(time.Second, 30*time.Second, 0))
		}
	}
	for i := 0; i < *devices; i++ {
		waitTurn(begin, i, *rate)
		wg.Add(1)
		go device(i)
	}
	<-allDone
	close(stop)
	result := snapshot(false)
	close(release)
	wg.Wait()
	finish(result)
}

// exchangeUplink sends, on a welcomed connection, every message of the device not yet answered
// (those sent before on a lost connection first, same ids), then the new ones up to msgs, each
// as one write, and reads answers until every message has one. It returns "" once they all
// have, else why the connection was lost. onSent is told each first send; onAnswer each answer
// (nack: its reason, "" for an ack) with its latency from the last send.
func exchangeUplink(conn io.ReadWriter, msgs int, next, answered *int, sent map[int]time.Time,
	onSent func(seq int, at time.Time), onAnswer func(latency time.Duration, nack string)) string {
	again := make([]int, 0, len(sent))
	for seq := range sent {
		again = append(again, seq)
	}
	sort.Ints(again)
	buf := make([]byte, 0, 160)
	write := func(seq int) error {
		now := time.Now()
		buf = buf[:0]
		buf = append(buf, `{"type":"msg","id":"m-`...)
		buf = strconv.AppendInt(buf, int64(seq), 10)
		buf = append(buf, `","topic":"telemetry","body":{"seq":`...)
		buf = strconv.AppendInt(buf, int64(seq), 10)
		buf = append(buf, `,"at":"`...)
		buf = now.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000Z07:00")
		buf = append(buf, `","temperature":`...)
		buf = strconv.AppendFloat(buf, 20+float64(rand.Intn(101))/10, 'f', -1, 64)
		buf = append(buf, "}}\n"...)
		sent[seq] = now
		_, err := conn.Write(buf)
		return err
	}
	for _, seq := range again {
		if err := write(seq); err != nil {
			return classify(err)
		}
	}
	for *next < msgs {
		*next++
		if err := write(*next); err != nil {
			return classify(err)
		}
		onSent(*next, sent[*next])
	}
	r := bufio.NewReaderSize(conn, 4096)
	for *answered < msgs {
		line, err := readGatewayLine(r)
		if err != nil {
			return classify(err)
		}
		var m gatewayLine
		if json.Unmarshal(line, &m) != nil {
			return "bad_line"
		}
		switch m.Type {
		case "ack", "nack":
			if len(m.ID) < 3 {
				continue
			}
			seq, err := strconv.Atoi(m.ID[2:])
			if err != nil {
				continue
			}
			at, ok := sent[seq]
			if !ok {
				continue // a second answer to a message sent twice
			}
			delete(sent, seq)
			*answered++
			reason := ""
			if m.Type == "nack" {
				reason = m.Reason
				if reason == "" {
					reason = "unknown"
				}
			}
			onAnswer(time.Since(at), reason)
		case "cmd":
			ack, _ := json.Marshal(map[string]string{"type": "cmd_ack", "id": m.ID})
			if _, err := conn.Write(append(ack, '\n')); err != nil {
				return classify(err)
			}
		case "error":
			return m.errorReason()
		}
	}
	return ""
}
