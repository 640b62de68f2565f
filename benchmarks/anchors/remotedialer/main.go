// Command remotedialer-anchor is the Rancher-style tunnel that benchmarks/k8s_path.py measures beside
// kaas's own: Rancher's github.com/rancher/remotedialer, used the way Rancher's Kubernetes proxy uses it.
//
//	remotedialer-anchor server -apiserver https://127.0.0.1:6443 -ca ca.crt -cert admin.crt -key admin.key \
//	    -ready-file ready.json
//	remotedialer-anchor client -connect ws://127.0.0.1:PORT/connect -allow 127.0.0.1:6443
//
// The client (the agent's part) dials the server over one WebSocket and holds it; the server proxies every
// other HTTP request through that WebSocket to the apiserver: remotedialer's Server.Dialer is the
// DialContext of the http.Transport under an httputil.ReverseProxy, and TLS to the apiserver runs end to end
// through the tunnel (the client only pipes bytes to the one address it allows). The server presents the
// apiserver's admin client certificate for every caller: the anchor measures the transport, not
// authorization, so a caller only shows the one bearer token ANCHOR_PROXY_TOKEN (the client shows
// ANCHOR_TUNNEL_TOKEN when it dials). Tokens come from the environment, never the command line.
//
// The server listens on 127.0.0.1 (port 0 by default: the OS picks) and writes {"url": "http://..."} to
// -ready-file once it serves. Both modes run until SIGINT or SIGTERM. Built by
// benchmarks/anchors/build_remotedialer.sh.
package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
)

// clientKey names the one tunnel session; a server here carries one cluster.
const clientKey = "bench"

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: remotedialer-anchor server|client [flags]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "server":
		err = runServer(ctx, os.Args[2:])
	case "client":
		err = runClient(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q (server or client)", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

func token(name string) (string, error) {
	value := os.Getenv(name)
	if value == "" {
		return "", fmt.Errorf("%s is not set", name)
	}
	return value, nil
}

func bearerMatches(req *http.Request, want string) bool {
	got := req.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+want)) == 1
}

func quietLogs(debug bool) {
	if debug {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		// remotedialer logs every session at Info
		logrus.SetLevel(logrus.WarnLevel)
	}
}

func runServer(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	listen := flags.String("listen", "127.0.0.1:0", "address to serve on (loopback)")
	readyFile := flags.String("ready-file", "", "where to write {\"url\": ...} once serving")
	apiserver := flags.String("apiserver", "", "the apiserver's URL, as the client reaches it")
	caFile := flags.String("ca", "", "the apiserver's CA certificate (PEM)")
	certFile := flags.String("cert", "", "the admin client certificate presented to the apiserver (PEM)")
	keyFile := flags.String("key", "", "its key (PEM)")
	debug := flags.Bool("debug", false, "remotedialer's debug logs")
	if err := flags.Parse(args); err != nil {
		return err
	}
	quietLogs(*debug)
	tunnelToken, err := token("ANCHOR_TUNNEL_TOKEN")
	if err != nil {
		return err
	}
	proxyToken, err := token("ANCHOR_PROXY_TOKEN")
	if err != nil {
		return err
	}
	target, err := url.Parse(*apiserver)
	if err != nil || target.Scheme != "https" || target.Host == "" {
		return fmt.Errorf("-apiserver must be an https URL, not %q", *apiserver)
	}
	tlsConfig, err := adminTLS(*caFile, *certFile, *keyFile)
	if err != nil {
		return err
	}

	tunnels := remotedialer.New(func(req *http.Request) (string, bool, error) {
		return clientKey, bearerMatches(req, tunnelToken), nil
	}, remotedialer.DefaultErrorWriter)
	transport := &http.Transport{
		DialContext:     tunnels.Dialer(clientKey),
		TLSClientConfig: tlsConfig,
		// HTTP/1.1 through the tunnel, one tunnelled connection per request in flight, as nginx and kaas
		// speak to the apiserver; idle ones are kept for the next request
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(out *httputil.ProxyRequest) {
			out.SetURL(target)
			out.Out.Header.Del("Authorization")
		},
		Transport: transport,
		// watches stream: every write of the apiserver goes on at once
		FlushInterval: -1,
	}
	mux := http.NewServeMux()
	mux.Handle("/connect", tunnels)
	mux.HandleFunc("/", func(rw http.ResponseWriter, req *http.Request) {
		if !bearerMatches(req, proxyToken) {
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
		if !tunnels.HasSession(clientKey) {
			http.Error(rw, "no tunnel session", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(rw, req)
	})

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	if *readyFile != "" {
		if err := writeReady(*readyFile, "http://"+listener.Addr().String()); err != nil {
			_ = server.Close()
			return err
		}
	}
	select {
	case <-ctx.Done():
		// the benchmark is over: hijacked tunnel and watch connections end with the process
		_ = server.Close()
		return nil
	case err := <-served:
		return err
	}
}

func adminTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

func writeReady(path, serverURL string) error {
	data, err := json.Marshal(map[string]string{"url": serverURL})
	if err != nil {
		return err
	}
	// written whole, then renamed: the driver never reads half a file
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func runClient(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	connect := flags.String("connect", "", "the server's WebSocket URL (ws://.../connect)")
	allow := flags.String("allow", "", "the one host:port the server may dial through this client")
	debug := flags.Bool("debug", false, "remotedialer's debug logs")
	if err := flags.Parse(args); err != nil {
		return err
	}
	quietLogs(*debug)
	tunnelToken, err := token("ANCHOR_TUNNEL_TOKEN")
	if err != nil {
		return err
	}
	if *connect == "" || *allow == "" {
		return errors.New("-connect and -allow are required")
	}
	headers := http.Header{"Authorization": []string{"Bearer " + tunnelToken}}
	allowed := func(proto, address string) bool { return proto == "tcp" && address == *allow }
	// reconnects with remotedialer's backoff until the signal
	err = remotedialer.ClientConnectWithOpts(ctx, *connect, headers, nil, allowed, nil, nil)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
