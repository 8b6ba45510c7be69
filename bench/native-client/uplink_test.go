package main

import (
	"bufio"
	"encoding/json"
	"net"
	"testing"
	"time"
)

// An uplink device sends every message at once, each as its own line; a connection lost with
// messages unanswered sends those again, first and in order, on the next one (same ids), and
// new ones only after; a second answer to a message is ignored, a nack counts as an answer.
func TestExchangeUplinkResendsUnanswered(t *testing.T) {
	next, answered := 0, 0
	sent := map[int]time.Time{}
	var firsts []int
	var nacks []string
	onSent := func(seq int, _ time.Time) { firsts = append(firsts, seq) }
	onAnswer := func(_ time.Duration, nack string) { nacks = append(nacks, nack) }

	// serve reads one message line per id of wantIDs and checks it, then writes the answers and,
	// with hangUp, closes.
	serve := func(c net.Conn, wantIDs []string, answers []string, hangUp bool) <-chan error {
		done := make(chan error, 1)
		go func() {
			r := bufio.NewReader(c)
			for _, want := range wantIDs {
				line, err := r.ReadBytes('\n')
				if err != nil {
					done <- err
					return
				}
				var m struct {
					Type, ID, Topic string
					Body            struct{ Seq int }
				}
				if err := json.Unmarshal(line, &m); err != nil || m.Type != "msg" || m.ID != want || m.Topic != "telemetry" {
					t.Errorf("read %s, want msg %s", line, want)
				}
			}
			for _, a := range answers {
				if _, err := c.Write([]byte(a + "\n")); err != nil {
					done <- err
					return
				}
			}
			if hangUp {
				_ = c.Close()
			}
			done <- nil
		}()
		return done
	}

	client, server := net.Pipe()
	done := serve(server, []string{"m-1", "m-2", "m-3", "m-4", "m-5"},
		[]string{`{"type":"ack","id":"m-1"}`, `{"type":"ack","id":"m-2"}`}, true)
	if got := exchangeUplink(client, 5, &next, &answered, sent, onSent, onAnswer); got != "closed" {
		t.Fatalf("first connection: %q, want closed", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if answered != 2 || len(sent) != 3 || next != 5 {
		t.Fatalf("after the first connection: answered %d, unanswered %d, next %d", answered, len(sent), next)
	}

	client, server = net.Pipe()
	done = serve(server, []string{"m-3", "m-4", "m-5"}, []string{
		`{"type":"ack","id":"m-3"}`, `{"type":"ack","id":"m-3"}`, `{"type":"nack","id":"m-4","reason":"rate_limited"}`, `{"type":"ack","id":"m-5"}`,
	}, false)
	if got := exchangeUplink(client, 5, &next, &answered, sent, onSent, onAnswer); got != "" {
		t.Fatalf("second connection: %q, want every message answered", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	if answered != 5 || len(sent) != 0 {
		t.Fatalf("answered %d, unanswered %d", answered, len(sent))
	}
	if len(firsts) != 5 {
		t.Fatalf("first sends %v, want 5 (a resend is not a first send)", firsts)
	}
	want := []string{"", "", "", "rate_limited", ""}
	if len(nacks) != len(want) {
		t.Fatalf("answers %q, want %q", nacks, want)
	}
	for i := range want {
		if nacks[i] != want[i] {
			t.Fatalf("answers %q, want %q", nacks, want)
		}
	}
}
