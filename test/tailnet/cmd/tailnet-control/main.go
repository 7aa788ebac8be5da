// Command tailnet-control is the rig's Tailscale control server: Tailscale's own test control
// server (tailscale.com/tstest/integration/testcontrol) plus an in-process DERP relay and STUN
// server on an address every network namespace of the rig can route to, and a loopback-only admin
// API that mints pre-authorised auth keys and lists nodes.
//
// Usage:
//
//	tailnet-control --listen 198.19.255.252:0 --admin 127.0.0.1:0 --ready /path/ready.json
//
// The control protocol is served over HTTPS by default with a fresh rig CA written as ca.pem
// beside the ready file (--scheme http serves plain HTTP; see why HTTPS is the default below). The
// ready file (written once everything listens, mode 600) holds the control URL, the CA file, the
// admin URL and the DERP/STUN ports. Admin API (loopback only, never reachable from a namespace):
//
//	POST /keys  {"reusable":false,"tags":["tag:x"]}  -> {"id":"k1","key":"tskey-auth-..."}
//	GET  /keys                                        -> [{"id","reusable","tags","used"}] (no secrets)
//	GET  /nodes                                       -> [{"id","name","hostname","addresses","tags","loginName",...}]
//
// The process exits when its stdin reaches EOF, so a supervisor that dies takes it along.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/stunserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

type authKey struct {
	id       string
	secret   string
	reusable bool
	tags     []string
	// usedBy is the node key that consumed a one-off key. The same node may send its register
	// request again (a retry after a dropped connection); any other node is refused.
	usedBy key.NodePublic
	used   bool
}

type keyStore struct {
	// known says whether testcontrol already has this node key (a joined node refreshing).
	known func(key.NodePublic) bool
	mu    sync.Mutex
	n     int
	keys  []*authKey
}

var tagRE = regexp.MustCompile(`^tag:[a-zA-Z][a-zA-Z0-9-]*$`)

func (ks *keyStore) mint(reusable bool, tags []string) (*authKey, error) {
	for _, t := range tags {
		if !tagRE.MatchString(t) {
			return nil, fmt.Errorf("invalid tag %q: want tag:<name>", t)
		}
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.n++
	k := &authKey{
		id:       "k" + strconv.Itoa(ks.n),
		reusable: reusable,
		tags:     slices.Clone(tags),
	}
	// The shape of a Tailscale auth key (tskey-auth-<id>-<secret>), so client-side parsing is exercised.
	k.secret = "tskey-auth-" + k.id + "CNTRL-" + hex.EncodeToString(b)
	ks.keys = append(ks.keys, k)
	return k, nil
}

// check is the RegisterCheck: only a register request carrying a known key is admitted, a one-off
// key only once, and a tagged key gives the node exactly its tags. The key is never logged.
func (ks *keyStore) check(req *tailcfg.RegisterRequest) string {
	if req.Auth == nil || req.Auth.AuthKey == "" {
		// No key: a node that already joined, refreshing its registration, is admitted; anything
		// else would be an interactive login, which this tailnet does not offer.
		if ks.known(req.NodeKey) || (!req.OldNodeKey.IsZero() && ks.known(req.OldNodeKey)) {
			return ""
		}
		log.Printf("register of node %s refused: no auth key", req.NodeKey.ShortString())
		return "this tailnet needs a pre-authorised auth key (no interactive login)"
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var k *authKey
	for _, c := range ks.keys {
		if subtle.ConstantTimeCompare([]byte(c.secret), []byte(req.Auth.AuthKey)) == 1 {
			k = c
		}
	}
	if k == nil {
		log.Printf("register of node %s refused: unknown auth key", req.NodeKey.ShortString())
		return "invalid authkey"
	}
	if !k.reusable && k.used && k.usedBy != req.NodeKey {
		log.Printf("register of node %s refused: one-off key %s already used", req.NodeKey.ShortString(), k.id)
		return "invalid authkey: one-off key already used"
	}
	if len(k.tags) > 0 {
		var requested []string
		if req.Hostinfo != nil {
			requested = req.Hostinfo.RequestTags
		}
		for _, t := range requested {
			if !slices.Contains(k.tags, t) {
				log.Printf("register of node %s refused: tag %s not in key %s", req.NodeKey.ShortString(), t, k.id)
				return fmt.Sprintf("requested tags [%s] are invalid or not permitted", t)
			}
		}
		if req.Hostinfo == nil {
			req.Hostinfo = &tailcfg.Hostinfo{}
		}
		req.Hostinfo.RequestTags = slices.Clone(k.tags)
	}
	k.used = true
	k.usedBy = req.NodeKey
	log.Printf("register of node %s admitted with key %s", req.NodeKey.ShortString(), k.id)
	return ""
}

func main() {
	listen := flag.String("listen", "198.19.255.252:0", "control (HTTP) and DERP/STUN address; its IP must be routable from every namespace")
	admin := flag.String("admin", "127.0.0.1:0", "admin API address (loopback)")
	ready := flag.String("ready", "", "write the ready JSON here once listening")
	magicDomain := flag.String("magic-dns-domain", "rig-tailnet.internal", "the tailnet's DNS suffix: node names are <hostname>.<this>")
	scheme := flag.String("scheme", "https", "https (a fresh rig CA, written as ca.pem beside the ready file) or http")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("--listen: %v", err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
		log.Fatalf("--listen needs an IPv4 address, got %q", host)
	}
	adminHost, _, err := net.SplitHostPort(*admin)
	if err != nil || !net.ParseIP(adminHost).IsLoopback() {
		log.Fatalf("--admin must be a loopback address, got %q", *admin)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// DERP: real relay, TLS with a self-signed certificate that clients pin by hash (CertName
	// "sha256-raw:..."), so nothing is skipped on the client side.
	derpLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		log.Fatalf("derp listen: %v", err)
	}
	cert, certHash, err := selfSigned(host)
	if err != nil {
		log.Fatalf("derp cert: %v", err)
	}
	derp := derpserver.New(key.NewNode(), log.Printf)
	derpSrv := &http.Server{
		Handler:   derpserver.Handler(derp),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		// DERP upgrades HTTP/1.1; no HTTP/2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	go func() { _ = derpSrv.ServeTLS(derpLn, "", "") }()

	stun := stunserver.New(ctx)
	if err := stun.Listen(net.JoinHostPort(host, "0")); err != nil {
		log.Fatalf("stun listen: %v", err)
	}
	go func() { _ = stun.Serve() }()

	ctlLn, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("control listen: %v", err)
	}
	baseURL := "http://" + ctlLn.Addr().String()
	caFile := ""
	switch *scheme {
	case "http":
	case "https":
		// Why HTTPS: Tailscale's client dials http:// control URLs on a public-range address with a
		// fallback to port 443, and after a recent dial (a failed join retried within two minutes)
		// it dials only that fallback ("TLS forced: no port 80 dialed"). A control server on
		// https://ip:port is dialled on that port alone. The client trusts the rig CA through
		// SSL_CERT_FILE (or the server's CA bundle), as a real server trusts Let's Encrypt.
		if *ready == "" {
			log.Fatalf("--scheme https needs --ready (ca.pem is written beside it)")
		}
		caPEM, leaf, err := rigCA(host)
		if err != nil {
			log.Fatalf("control cert: %v", err)
		}
		caFile = filepath.Join(filepath.Dir(*ready), "ca.pem")
		if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
			log.Fatalf("ca.pem: %v", err)
		}
		ctlLn = tls.NewListener(ctlLn, &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"http/1.1"}})
		baseURL = "https://" + ctlLn.Addr().String()
	default:
		log.Fatalf("--scheme must be https or http")
	}
	derpPort := derpLn.Addr().(*net.TCPAddr).Port
	stunPort := stun.LocalAddr().(*net.UDPAddr).Port

	control := &testcontrol.Server{
		DERPMap: &tailcfg.DERPMap{
			// Only this region: a client never looks for Tailscale's public DERP servers.
			OmitDefaultRegions: true,
			Regions: map[int]*tailcfg.DERPRegion{
				900: {
					RegionID:   900,
					RegionCode: "rig",
					RegionName: "Cannes rig",
					Nodes: []*tailcfg.DERPNode{{
						Name:       "900a",
						RegionID:   900,
						HostName:   host,
						IPv4:       host,
						IPv6:       "none",
						STUNPort:   stunPort,
						DERPPort:   derpPort,
						CertName:   "sha256-raw:" + certHash,
						STUNTestIP: host,
					}},
				},
			},
		},
		ExplicitBaseURL: baseURL,
		// No RequireAuth/RequireAuthKey: ks.check admits or refuses every register request before
		// testcontrol sees it, and an admitted node is pre-authorised (MachineAuthorized).
		// Tags come from the request, which ks.check has set to the key's tags.
		TagOwners: map[string][]string{},
		// Node names <hostname>.<domain>, as MagicDNS names on Tailscale: Serve routes HTTP requests
		// by that Host name (a request to the bare tailnet IP gets 404). No DNSConfig: no resolver
		// and no cert domains, so nothing asks for ACME certificates (they could not be had here).
		MagicDNSDomain: *magicDomain,
		AllOnline: true,
		Logf:      log.Printf,
	}
	ks := &keyStore{known: func(k key.NodePublic) bool { return control.Node(k) != nil }}
	handler := control.CannesHandler(ks.check)
	go func() {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		log.Fatal(srv.Serve(ctlLn))
	}()

	adminLn, err := net.Listen("tcp", *admin)
	if err != nil {
		log.Fatalf("admin listen: %v", err)
	}
	adminURL := "http://" + adminLn.Addr().String()
	go func() {
		srv := &http.Server{Handler: adminMux(ks, control), ReadHeaderTimeout: 10 * time.Second}
		log.Fatal(srv.Serve(adminLn))
	}()

	if *ready != "" {
		b, _ := json.Marshal(map[string]any{
			"url":      baseURL,
			"adminUrl": adminURL,
			"derpPort": derpPort,
			"stunPort": stunPort,
			"pid":      os.Getpid(),
			"caFile":   caFile,
		})
		tmp := filepath.Join(filepath.Dir(*ready), ".ready.tmp")
		if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
			log.Fatalf("ready: %v", err)
		}
		if err := os.Rename(tmp, *ready); err != nil {
			log.Fatalf("ready: %v", err)
		}
	}
	log.Printf("control %s, admin %s, derp %s:%d, stun %s:%d", baseURL, adminURL, host, derpPort, host, stunPort)

	// Stdin EOF: the parent is gone.
	_, _ = io.Copy(io.Discard, os.Stdin)
	log.Printf("stdin closed, exiting")
}

func adminMux(ks *keyStore, control *testcontrol.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /keys", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reusable bool     `json:"reusable"`
			Tags     []string `json:"tags"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			http.Error(w, "bad JSON: "+err.Error(), 400)
			return
		}
		k, err := ks.mint(body.Reusable, body.Tags)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		writeJSON(w, map[string]any{"id": k.id, "key": k.secret, "reusable": k.reusable, "tags": k.tags})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		ks.mu.Lock()
		out := []map[string]any{}
		for _, k := range ks.keys {
			out = append(out, map[string]any{"id": k.id, "reusable": k.reusable, "tags": k.tags, "used": k.used})
		}
		ks.mu.Unlock()
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		out := []map[string]any{}
		for _, n := range control.AllNodes() {
			addrs := []string{}
			for _, a := range n.Addresses {
				addrs = append(addrs, a.Addr().String())
			}
			hostname := ""
			if n.Hostinfo.Valid() {
				hostname = n.Hostinfo.Hostname()
			}
			out = append(out, map[string]any{
				"id":        int64(n.ID),
				"stableId":  string(n.StableID),
				"name":      n.Name,
				"hostname":  hostname,
				"addresses": addrs,
				"tags":      n.Tags,
				"userId":    int64(n.User),
				"nodeKey":   n.Key.String(),
			})
		}
		writeJSON(w, out)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// rigCA makes a fresh CA (PEM, for clients) and a certificate it signs for ip (for the control
// server). Both live only as long as this process; the CA key is never written anywhere.
func rigCA(ip string) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "Cannes rig tailnet CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + 1),
		Subject:      pkix.Name{CommonName: ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, nil
}

// selfSigned makes the DERP server's certificate for ip and returns the hex SHA-256 of its DER,
// which the DERP map pins.
func selfSigned(ip string) (tls.Certificate, string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "cannes-rig-derp"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		DNSNames:     []string{strings.ReplaceAll(ip, ".", "-") + ".derp.rig.invalid"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, hex.EncodeToString(sum[:]), nil
}
