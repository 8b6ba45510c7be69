package main

import (
	"crypto/tls"
	"flag"
	"sync"
	"sync/atomic"
	"time"
)

// runStorm: -devices N devices connect at once (or at -connect-rate per second). An attempt is
// TCP connect + TLS handshake + the line echoed, within -deadline ms (with -gateway msg, a
// gateway stampede: hello → welcome and one msg → its ack instead of the echo, device ids from
// the source addresses; see gateway.go); a failed attempt is closed
// and retried after -backoff-base × 2ⁿ (n = failures so far, capped at -backoff-cap) × uniform
// [0.5, 1.5). Nothing is retried after -give-up ms; devices that came back hold their connection
// until the end (-hold).
//
// With -reconnect, devices first connect gently (-setup-rate per second, -setup-in-flight at
// once, retried quietly), print {"t":"ready",...} once all are connected, and wait for the stdin
// line "storm" (answered {"t":"armed"}). From then on a device whose connection closes starts the
// storm sequence above at once; times count from the arming. With -resume, each device keeps its
// own session cache across attempts, so after a server restart it offers its ticket; crypto/tls
// empties that cache whenever a resumption attempt fails, even when the connection was only reset
// or timed out, so by default (-keep-ticket) a device keeps its ticket until it gets a new one.
//
// The result ({"t":"done",...}) reports per device its attempts, when each device came back (ms
// from the storm's start, whose wall-clock time is `epoch`), every failed attempt with its source
// address, local port (0: the TCP connect did not complete), time, reason and stage, and the client's
// CPU and handshakes, over the whole run and over the storm alone (`storm`).
func runStorm(args []string) {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	o := commonFlags(fs, 600)
	devices := fs.Int("devices", 0, "devices (required)")
	connectRate := fs.Float64("connect-rate", 0, "devices started per second (0: all at once)")
	deadline := fs.Int("deadline", 5000, "ms per attempt: connect, handshake and echo")
	backoffBase := fs.Int("backoff-base", 1000, "ms: the first retry waits this × [0.5, 1.5)")
	backoffCap := fs.Int("backoff-cap", 30000, "ms: longest backoff before the random factor")
	giveUp := fs.Int("give-up", 120000, "ms after the storm's start past which a failed device stops retrying")
	hold := fs.Bool("hold", true, "devices that came back hold their connection until the end (with -stdin: until stop)")
	reconnect := fs.Bool("reconnect", false, "connect and hold first; storm when the connections close (implies -stdin)")
	setupRate := fs.Float64("setup-rate", 1000, "with -reconnect: setup connects per second")
	setupInFlight := fs.Int("setup-in-flight", 256, "with -reconnect: setup connects in flight at once")
	resume := fs.Bool("resume", false, "each device keeps its own TLS session cache (tickets) across attempts")
	keepTicket := fs.Bool("keep-ticket", true, "with -resume: a failed attempt keeps the device's ticket (crypto/tls drops it on any failed resumption, even a reset)")
	parse(fs, o, args)
	if *devices <= 0 {
		fatalf("-devices is required")
	}
	if *reconnect {
		o.stdin = true
	}
	s := &storm{
		o:           o,
		deadline:    time.Duration(*deadline) * time.Millisecond,
		backoffBase: time.Duration(*backoffBase) * time.Millisecond,
		backoffCap:  time.Duration(*backoffCap) * time.Millisecond,
		giveUp:      time.Duration(*giveUp) * time.Millisecond,
		hold:        *hold,
		reconnect:   *reconnect,
		held:        map[*tls.Conn]struct{}{},
		ended:       make(chan struct{}),
		stop:        make(chan struct{}),
		armed:       make(chan struct{}),
	}
	base := o.tlsConfig()
	s.devices = make([]*stormDevice, *devices)
	for i := range s.devices {
		d := &stormDevice{index: i, address: sourceAddress(o.net, i), cfg: base}
		if *resume {
			d.cfg = base.Clone()
			d.cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			if *keepTicket {
				d.cfg.ClientSessionCache = keptTicket{d.cfg.ClientSessionCache}
			}
		}
		s.devices[i] = d
	}
	watchdog(o, s.result)

	cmds := commands(o)
	go func() {
		for c := range cmds {
			switch c {
			case "storm":
				s.arm()
			case "stop":
				s.stopOnce.Do(func() { close(s.stop) })
			}
		}
		s.stopOnce.Do(func() { close(s.stop) }) // stdin ended: the runner is gone
	}()
	progress := make(chan struct{})
	every(2*time.Second, progress, s.progress)

	if s.reconnect {
		s.runSetup(*setupRate, *setupInFlight)
		select {
		case <-s.armed:
		case <-s.stop:
			finish(s.result(true))
			s.closeAll()
			return
		}
	} else {
		s.startStorm()
		pace(len(s.devices), *connectRate, 0, s.stop, func(i int) { s.stormDevice(s.devices[i]) })
	}
	stopped := false
	select {
	case <-s.ended:
	case <-s.stop:
		stopped = true
	}
	close(progress)
	finish(s.result(stopped))
	if s.hold && o.stdin {
		<-s.stop
	}
	s.closeAll()
}

type stormDevice struct {
	index   int
	address string
	cfg     *tls.Config
	// guarded by storm.mu
	attempts int
	stormed  bool
	setUp    bool
}

type abandon struct {
	Address string  `json:"address"`
	Port    int     `json:"port"`
	At      float64 `json:"at"`
	Reason  string  `json:"reason"`
	Stage   string  `json:"stage"` // connect, handshake, echo (with -gateway: welcome, ack)
}

type storm struct {
	o                              *options
	devices                        []*stormDevice
	deadline, backoffBase          time.Duration
	backoffCap, giveUp             time.Duration
	hold, reconnect                bool
	stop, armed, ended             chan struct{}
	stopOnce, armOnce, endOnce     sync.Once
	stopping                       atomic.Bool
	setupDone, setupFailures, open atomic.Int64

	mu          sync.Mutex
	started     bool
	epoch       time.Time
	startCost   clientCost
	pending     int
	back        int
	resumedBack int
	connectedAt []float64
	abandoned   []abandon
	refused     int
	held        map[*tls.Conn]struct{}
}

// startStorm marks the storm's start: the origin of every time reported.
func (s *storm) startStorm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	s.epoch = time.Now()
	s.startCost = currentCost()
	s.pending = len(s.devices)
}

// arm: from now on a closed connection starts its device's storm. Bounded: devices whose
// connection is never cut are reported as not back after give-up + deadline + 35 s.
func (s *storm) arm() {
	s.armOnce.Do(func() {
		s.startStorm()
		emit(map[string]interface{}{"t": "armed"})
		close(s.armed)
		time.AfterFunc(s.giveUp+s.deadline+35*time.Second, s.end)
	})
}

func (s *storm) end() { s.endOnce.Do(func() { close(s.ended) }) }

func (s *storm) isArmed() bool {
	select {
	case <-s.armed:
		return true
	default:
		return false
	}
}

// stormDevice is the storm sequence of one device: attempts with backoff until it is back or
// gives up.
func (s *storm) stormDevice(d *stormDevice) {
	defer s.deviceEnded()
	for {
		if s.stopping.Load() {
			return
		}
		s.mu.Lock()
		d.attempts++
		n := d.attempts
		s.mu.Unlock()
		a := s.o.connectOnce(d.address, s.deadline, d.cfg, true)
		at := time.Since(s.epoch)
		if a.ok {
			s.mu.Lock()
			s.back++
			if a.resumed {
				s.resumedBack++
			}
			s.connectedAt = append(s.connectedAt, ms(at))
			if s.hold {
				s.held[a.conn] = struct{}{}
			}
			s.mu.Unlock()
			if !s.hold {
				_ = a.conn.Close()
			}
			return
		}
		s.mu.Lock()
		s.abandoned = append(s.abandoned, abandon{Address: d.address, Port: a.localPort, At: ms(at), Reason: a.reason, Stage: a.stage})
		if a.reason == "refused" {
			s.refused++
		}
		s.mu.Unlock()
		if at > s.giveUp {
			return
		}
		select {
		case <-time.After(backoff(s.backoffBase, s.backoffCap, n-1)):
		case <-s.stop:
			return
		}
	}
}

func (s *storm) deviceEnded() {
	s.mu.Lock()
	s.pending--
	left := s.pending
	s.mu.Unlock()
	if left == 0 {
		s.end()
	}
}

// runSetup connects every device at rate per second, inFlight at once, retrying quietly, and
// prints {"t":"ready",...} once all are connected.
func (s *storm) runSetup(rate float64, inFlight int) {
	began := time.Now()
	pace(len(s.devices), rate, inFlight, s.stop, func(i int) { s.setup(s.devices[i]) })
	s.readyOnce(began)
}

// setup connects a device before the storm (retried after 1 s until it is connected) and
// watches its connection.
func (s *storm) setup(d *stormDevice) {
	for !s.stopping.Load() {
		a := s.o.connectOnce(d.address, 30*time.Second, d.cfg, true)
		if a.ok {
			s.watch(d, a.conn)
			return
		}
		s.setupFailures.Add(1)
		select {
		case <-time.After(time.Second):
		case <-s.stop:
			return
		}
	}
}

func (s *storm) readyOnce(began time.Time) {
	for s.setupDone.Load() < int64(len(s.devices)) {
		select {
		case <-s.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	resumable := 0
	for _, d := range s.devices {
		if d.cfg.ClientSessionCache != nil {
			if _, ok := d.cfg.ClientSessionCache.Get(d.cfg.ServerName); ok {
				resumable++
			}
		}
	}
	emit(map[string]interface{}{
		"t":             "ready",
		"connected":     s.open.Load(),
		"setupFailures": s.setupFailures.Load(),
		"setupMs":       ms(time.Since(began)),
		"resumable":     resumable,
		"cost":          currentCost(),
	})
}

// watch holds a setup connection; when it closes, the device connects again quietly before
// the storm is armed, and starts its storm after.
func (s *storm) watch(d *stormDevice, c *tls.Conn) {
	s.mu.Lock()
	s.held[c] = struct{}{}
	first := !d.setUp
	d.setUp = true
	s.mu.Unlock()
	s.open.Add(1)
	if first {
		s.setupDone.Add(1)
	}
	go func() {
		var buf [256]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				break
			}
		}
		s.open.Add(-1)
		s.mu.Lock()
		delete(s.held, c)
		s.mu.Unlock()
		_ = c.Close()
		if s.stopping.Load() {
			return
		}
		if !s.isArmed() {
			s.setup(d)
			return
		}
		s.mu.Lock()
		already := d.stormed
		d.stormed = true
		s.mu.Unlock()
		if !already {
			s.stormDevice(d)
		}
	}()
}

func (s *storm) progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		logf("storm setup: %d/%d connected, %d setup failures", s.setupDone.Load(), len(s.devices), s.setupFailures.Load())
		return
	}
	logf("storm: %.1f s, %d/%d back, %d failed attempts", time.Since(s.epoch).Seconds(), s.back, len(s.devices), len(s.abandoned))
}

// result is the storm's outcome so far (truncated: cut short by -max-seconds or stop).
func (s *storm) result(truncated bool) interface{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	attempts := make([]int, len(s.devices))
	stormed := 0
	for i, d := range s.devices {
		attempts[i] = d.attempts
		if d.stormed {
			stormed++
		}
	}
	cost := currentCost()
	phase := clientCost{}
	epoch := 0.0
	if s.started {
		phase = clientCost{
			CPUMicros:         cost.CPUMicros - s.startCost.CPUMicros,
			FullHandshakes:    cost.FullHandshakes - s.startCost.FullHandshakes,
			ResumedHandshakes: cost.ResumedHandshakes - s.startCost.ResumedHandshakes,
		}
		epoch = float64(s.epoch.UnixMicro()) / 1000
	}
	if !s.reconnect {
		stormed = len(s.devices)
	}
	return map[string]interface{}{
		"t":                 "done",
		"truncated":         truncated,
		"devices":           len(s.devices),
		"stormed":           stormed,
		"connected":         s.back,
		"resumedDevices":    s.resumedBack,
		"attempts":          attempts,
		"connectedAt":       nonNil(s.connectedAt),
		"abandoned":         nonNilAbandon(s.abandoned),
		"refused":           s.refused,
		"setupFailures":     s.setupFailures.Load(),
		"epoch":             epoch,
		"cpuUs":             cost.CPUMicros,
		"fullHandshakes":    cost.FullHandshakes,
		"resumedHandshakes": cost.ResumedHandshakes,
		"storm":             phase,
	}
}

// closeAll closes every held connection.
func (s *storm) closeAll() {
	s.stopping.Store(true)
	s.mu.Lock()
	conns := make([]*tls.Conn, 0, len(s.held))
	for c := range s.held {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.NetConn().Close()
	}
}

func nonNil(v []float64) []float64 {
	if v == nil {
		return []float64{}
	}
	return v
}

func nonNilAbandon(v []abandon) []abandon {
	if v == nil {
		return []abandon{}
	}
	return v
}

// pace runs fn(0) … fn(n-1), each in its own goroutine, started at rate per second (0: all at
// once), with at most inFlight running at a time (0: no bound); it returns once all have been
// started (not finished), or when stop closes.
func pace(n int, rate float64, inFlight int, stop <-chan struct{}, fn func(i int)) {
	var slots chan struct{}
	if inFlight > 0 {
		slots = make(chan struct{}, inFlight)
	}
	began := time.Now()
	for i := 0; i < n; i++ {
		if rate > 0 {
			if wait := time.Until(began.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
				select {
				case <-time.After(wait):
				case <-stop:
					return
				}
			}
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
		}
		go func(i int) {
			fn(i)
			if slots != nil {
				<-slots
			}
		}(i)
	}
}

// keptTicket is a device's session cache that a failed attempt does not empty: crypto/tls
// removes the ticket (Put with nil) after any failed handshake that offered it, including a
// connection reset by a dying server or an attempt past its deadline, so without this a device
// would do a full handshake after every failed attempt. A server that no longer accepts the
// ticket answers with a full handshake and a new ticket, which replaces it.
type keptTicket struct{ tls.ClientSessionCache }

func (k keptTicket) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		k.ClientSessionCache.Put(key, cs)
	}
}
