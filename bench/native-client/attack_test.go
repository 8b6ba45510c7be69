package main

import (
	"net"
	"testing"
	"time"
)

// An attack connect is "closed" when the server closes it unanswered, "answered" when the server
// sends anything back, "refused" when nothing listens.
func TestAttackOnceOutcomes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answer := make(chan bool, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if <-answer {
				buf := make([]byte, 5)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte{22, 3, 3, 0, 1, 2})
				time.Sleep(50 * time.Millisecond)
			}
			_ = c.Close()
		}
	}()
	o := &options{host: "127.0.0.1", port: ln.Addr().(*net.TCPAddr).Port}
	hello := captureClientHello(o.tlsConfig())

	answer <- false
	if got, _ := attackOnce(o, "127.0.0.1", time.Second, hello, nil); got != outcomeClosed {
		t.Errorf("closed at accept: got %s, want %s", got, outcomeClosed)
	}
	answer <- true
	if got, _ := attackOnce(o, "127.0.0.1", time.Second, hello, nil); got != outcomeAnswered {
		t.Errorf("answered: got %s, want %s", got, outcomeAnswered)
	}

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	_ = free.Close()
	if got, _ := attackOnce(&options{host: "127.0.0.1", port: port}, "127.0.0.1", time.Second, hello, nil); got != outcomeRefused {
		t.Errorf("nothing listening: got %s, want %s", got, outcomeRefused)
	}
}
