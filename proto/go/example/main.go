// Command example sends one message through a local mesh node, as in the seed README:
// Dial the node's gRPC endpoint, call MeshData.Send, print the response.
//
// Build and run (GOPATH mode, see ../README.md):
//
//	go run mesh/proto/go/example -addr 127.0.0.1:50051 -dst 12345
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"

	"mesh/proto/go/meshpb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "gRPC address of the local mesh node")
	dst := flag.Uint64("dst", 12345, "destination node id")
	payload := flag.String("payload", "hello", "message payload")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline for dialing and sending")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// grpc-go 1.33 (Debian bookworm) predates insecure.NewCredentials; WithInsecure is its
	// equivalent. A node with gRPC TLS on needs grpc.WithTransportCredentials instead.
	conn, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatalf("dial %s: %v", *addr, err)
	}
	defer conn.Close()

	client := meshpb.NewMeshDataClient(conn)
	resp, err := client.Send(ctx, &meshpb.SendRequest{
		DstNode:    *dst,
		Payload:    []byte(*payload),
		RequireAck: true,
	})
	if err != nil {
		log.Fatalf("send to node %d: %v", *dst, err)
	}
	fmt.Printf("msg_id=%d status=%s message=%q\n", resp.GetMsgId(), resp.GetStatus(), resp.GetStatusMessage())
}
