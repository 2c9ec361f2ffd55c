package targetauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB) testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key as PEM.
func (ca testCA) issue(t testing.TB, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func write(t testing.TB, dir, name string, data []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// An httptest TLS server that requires a client certificate from its CA.
func TestMTLS(t *testing.T) {
	ca := newCA(t)
	srvCert, srvKey := ca.issue(t, "ehr.test", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	cliCert, cliKey := ca.issue(t, "kapbridge-clinic-a", x509.ExtKeyUsageClientAuth)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	var peer string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer = r.TLS.PeerCertificates[0].Subject.CommonName
		io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	cfg := config.TargetAuth{Type: "mtls", CAFile: write(t, dir, "ca.pem", ca.pem),
		CertFile: write(t, dir, "client.pem", cliCert), CertKeyFile: write(t, dir, "client-key.pem", cliKey)}
	rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr"})
	if err != nil {
		t.Fatal(err)
	}
	if st := get(t, rt, srv.URL); st != 200 || peer != "kapbridge-clinic-a" {
		t.Fatalf("status %d, peer %q", st, peer)
	}

	// The server's CA alone (no client certificate): the handshake fails.
	noCert, err := targetauth.New(config.TargetAuth{Type: "none", CAFile: cfg.CAFile}, targetauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	if resp, err := noCert.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: status %d, want a handshake error", resp.StatusCode)
	}
	// Without the CA the server's certificate is not trusted.
	noCA, err := targetauth.New(config.TargetAuth{Type: "mtls", CertFile: cfg.CertFile, CertKeyFile: cfg.CertKeyFile}, targetauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := noCA.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("an unknown server CA was trusted")
	}
	// A certificate with the wrong key is refused at start.
	_, otherKey := ca.issue(t, "other", x509.ExtKeyUsageClientAuth)
	bad := cfg
	bad.CertKeyFile = write(t, dir, "other-key.pem", otherKey)
	if _, err := targetauth.New(bad, targetauth.Options{}); err == nil {
		t.Fatal("mismatched certificate and key accepted")
	}
}
