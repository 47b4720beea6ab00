// Package meshtest drives three real mesh nodes in a line (A -> B -> C) from Go over gRPC:
// Send in its three modes, SendStream, Subscribe with credits and acks, Ack, GetStatus,
// GetTopology and SetPolicy. The nodes are the `mesh` binary named by $MESH_BIN (built by
// scripts/check-go.sh), each on free loopback ports with its own data directory.
//
// Run (GOPATH mode, as scripts/check-go.sh does):
//
//	MESH_BIN=target/debug/mesh GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go test mesh/proto/go/meshtest
package meshtest

import (
	"context"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"mesh/proto/go/meshpb"
)

// freePort asks the kernel for a free loopback port.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type node struct {
	id     uint64
	listen string
	grpc   string
	cmd    *exec.Cmd
	dir    string
}

// start runs a mesh node connecting to `peers`, with gRPC on.
func start(t *testing.T, id uint64, peers []string) *node {
	bin := os.Getenv("MESH_BIN")
	if bin == "" {
		t.Fatal("MESH_BIN is not set: the mesh binary to test (scripts/check-go.sh sets it)")
	}
	dir, err := ioutil.TempDir("", "meshtest")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{
		id:     id,
		listen: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		grpc:   "127.0.0.1:" + strconv.Itoa(freePort(t)),
		dir:    dir,
	}
	args := []string{
		"--node-id", strconv.FormatUint(id, 10), "--domain", "1",
		"--listen", n.listen, "--enable-grpc", "--grpc-listen", n.grpc,
		"--keepalive-ms", "500", "--data-dir", dir,
		"--wal-segment-mib", "4", "--wal-segments", "8",
	}
	for _, p := range peers {
		args = append(args, "--connect", p)
	}
	n.cmd = exec.Command(bin, args...)
	n.cmd.Env = append(os.Environ(), "MESH_LOG=warn")
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node %d: %v", id, err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		_, _ = n.cmd.Process.Wait()
		_ = os.RemoveAll(dir)
	})
	return n
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// grpc-go 1.33 (Debian) predates insecure.NewCredentials.
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestThreeNodesFromGo(t *testing.T) {
	c := start(t, 3, nil)
	b := start(t, 2, []string{c.listen})
	a := start(t, 1, []string{b.listen})
	ca, cc := dial(t, a.grpc), dial(t, c.grpc)
	controlA := meshpb.NewMeshControlClient(ca)
	dataA, dataC := meshpb.NewMeshDataClient(ca), meshpb.NewMeshDataClient(cc)

	// GetTopology: A sees the whole line once link-state converged.
	deadline := time.Now().Add(20 * time.Second)
	for {
		topo, err := controlA.GetTopology(ctx(t), &meshpb.GetTopologyRequest{})
		if err == nil && len(topo.GetNodes()) == 3 && len(topo.GetLinks()) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("topology did not converge: %v %v", topo, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Subscribe on C with 5 credits.
	sub, err := dataC.Subscribe(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Send(&meshpb.SubscribeRequest{Kind: &meshpb.SubscribeRequest_Start{
		Start: &meshpb.SubscribeStart{InitialCredits: 5}}}); err != nil {
		t.Fatal(err)
	}
	received := make(chan *meshpb.Received, 1024)
	go func() {
		for {
			m, err := sub.Recv()
			if err != nil {
				close(received)
				return
			}
			received <- m
		}
	}()
	next := func() *meshpb.Received {
		select {
		case m, ok := <-received:
			if !ok {
				t.Fatal("the Subscribe stream ended")
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no message within 20 s")
		}
		return nil
	}

	// Send (FIRE_AND_FORGET): answered once persisted; C receives it as sent.
	r, err := dataA.Send(ctx(t), &meshpb.SendRequest{DstNode: 3, Payload: []byte("hello"), CorrId: 7,
		Headers: map[string][]byte{"k": []byte("v")}})
	if err != nil || r.GetStatus() != meshpb.MessageStatus_MESSAGE_STATUS_PERSISTED || r.GetMsgId() == 0 {
		t.Fatalf("Send: %v %v", r, err)
	}
	first := r.GetMsgId()
	m := next()
	if m.GetMsgId() != first || string(m.GetPayload()) != "hello" || m.GetCorrId() != 7 ||
		string(m.GetHeaders()["k"]) != "v" || m.GetSrcNode() != 1 {
		t.Fatalf("received %v", m)
	}

	// WAIT_FOR_ACK, acked on the Subscribe stream.
	done := make(chan *meshpb.SendResponse, 1)
	go func() {
		r, err := dataA.Send(ctx(t), &meshpb.SendRequest{DstNode: 3, Payload: []byte("ack me"),
			RequireAck: true, Mode: meshpb.SendMode_SEND_MODE_WAIT_FOR_ACK})
		if err != nil {
			t.Errorf("WAIT_FOR_ACK Send: %v", err)
		}
		done <- r
	}()
	m = next()
	if !m.GetRequireAck() {
		t.Fatalf("require_ack lost: %v", m)
	}
	if err := sub.Send(&meshpb.SubscribeRequest{Kind: &meshpb.SubscribeRequest_Ack{
		Ack: &meshpb.AckRequest{SrcNode: m.GetSrcNode(), MsgId: m.GetMsgId(), Success: true}}}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.GetStatus() != meshpb.MessageStatus_MESSAGE_STATUS_ACK_SUCCESS {
		t.Fatalf("WAIT_FOR_ACK answered %v", r)
	}

	// WAIT_FOR_DELIVERY, then the Ack call.
	r, err = dataA.Send(ctx(t), &meshpb.SendRequest{DstNode: 3, Payload: []byte("by call"),
		RequireAck: true, Mode: meshpb.SendMode_SEND_MODE_WAIT_FOR_DELIVERY})
	if err != nil || r.GetStatus() != meshpb.MessageStatus_MESSAGE_STATUS_DELIVERED {
		t.Fatalf("WAIT_FOR_DELIVERY: %v %v", r, err)
	}
	byCall := r.GetMsgId()
	m = next()
	if _, err := dataC.Ack(ctx(t), &meshpb.AckRequest{SrcNode: 1, MsgId: m.GetMsgId(), Success: true}); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if _, err := dataC.Ack(ctx(t), &meshpb.AckRequest{SrcNode: 1, MsgId: 987654321}); status.Code(err) != codes.NotFound {
		t.Fatalf("Ack of an unknown message: %v", err)
	}

	// SendStream: 100 messages, every one answered by position; C gets them after more credits.
	stream, err := dataA.SendStream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := stream.Send(&meshpb.SendRequest{DstNode: 3, Payload: []byte(fmt.Sprintf("s%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	positions := map[uint64]bool{}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.GetStatus() != meshpb.MessageStatus_MESSAGE_STATUS_PERSISTED {
			t.Fatalf("SendStream answer %v", r)
		}
		positions[r.GetPosition()] = true
	}
	if len(positions) != 100 {
		t.Fatalf("%d SendStream answers", len(positions))
	}
	if err := sub.Send(&meshpb.SubscribeRequest{Kind: &meshpb.SubscribeRequest_Credits{Credits: 200}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		next()
	}

	// GetStatus: the ladder as A sees it.
	deadline = time.Now().Add(20 * time.Second)
	for {
		s, err := dataA.GetStatus(ctx(t), &meshpb.GetStatusRequest{MsgIds: []uint64{first, byCall, 424242}})
		if err != nil {
			t.Fatal(err)
		}
		e := s.GetEntries()
		if e[0].GetStatus() == meshpb.MessageStatus_MESSAGE_STATUS_DELIVERED &&
			e[1].GetStatus() == meshpb.MessageStatus_MESSAGE_STATUS_ACK_SUCCESS && !e[2].GetFound() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetStatus: %v", e)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// SetPolicy: deny C; A's next messages to it fail, rejected by policy.
	if _, err := controlA.SetPolicy(ctx(t), &meshpb.SetPolicyRequest{Policy: &meshpb.Policy{
		Version: 1, Deny: &meshpb.DestinationSet{Nodes: []uint64{3}}}}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		r, err := dataA.Send(ctx(t), &meshpb.SendRequest{DstNode: 3, Payload: []byte("denied"),
			Mode: meshpb.SendMode_SEND_MODE_WAIT_FOR_DELIVERY, TimeoutMs: 5000})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetStatus() == meshpb.MessageStatus_MESSAGE_STATUS_FAILED {
			if r.GetFailureReason() != meshpb.FailureReason_FAILURE_REASON_REJECTED_BY_POLICY {
				t.Fatalf("failed for another reason: %v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deny never applied: %v", r)
		}
	}
	// A bad request is INVALID_ARGUMENT, naming the field.
	if _, err := dataA.Send(ctx(t), &meshpb.SendRequest{DstNode: 0}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("dst_node 0: %v", err)
	}
}
