// Command etcd runs a single-member etcd server for nkvm's upstream control
// plane. It embeds go.etcd.io/etcd/server/v3 so the whole control plane builds
// from the Go module proxy at one pinned set of versions.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data (required)")
	clientURL := flag.String("listen-client-url", "http://127.0.0.1:2379", "URL clients connect to")
	peerURL := flag.String("listen-peer-url", "http://127.0.0.1:2380", "URL for peer traffic (unused by a single member, but etcd binds it)")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync: faster, and acceptable only for throwaway test clusters")
	showVersion := flag.Bool("version", false, "print the etcd version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Printf("etcd Version: %s\n", version.Version)
		return
	}
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}
	cfg, err := config(*dataDir, *clientURL, *peerURL, *noFsync)
	if err != nil {
		log.Fatal(err)
	}
	server, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("starting etcd: %v", err)
	}
	defer server.Close()

	select {
	case <-server.Server.ReadyNotify():
		log.Printf("etcd %s ready on %s", version.Version, *clientURL)
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		log.Fatal("etcd did not become ready within 60s")
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case sig := <-signals:
		log.Printf("etcd stopping on %s", sig)
	case err := <-server.Err():
		log.Fatalf("etcd failed: %v", err)
	}
}

func config(dataDir, clientURL, peerURL string, noFsync bool) (*embed.Config, error) {
	client, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("--listen-client-url %q: %w", clientURL, err)
	}
	peer, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("--listen-peer-url %q: %w", peerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "nkvm"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.UnsafeNoFsync = noFsync
	return cfg, nil
}
