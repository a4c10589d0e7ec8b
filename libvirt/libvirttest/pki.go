package libvirttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway certificate authority with one server and one client
// certificate, laid out the way libvirt expects them.
type PKI struct {
	// CACert, ServerCert and ServerKey are the files a daemon's
	// libvirtd.conf names in ca_file, cert_file and key_file.
	CACert, ServerCert, ServerKey string
	// ClientDir holds cacert.pem, clientcert.pem and clientkey.pem: the
	// directory a client URI names with ?pkipath= (as virsh takes it).
	ClientDir string
}

// NewPKI writes a fresh CA, a server certificate for 127.0.0.1, ::1 and
// localhost, and a client certificate into dir (created if missing), each
// with the key usages libvirt's GnuTLS checks demand (CA: certSign; server:
// digitalSignature, keyEncipherment, serverAuth; client: the same with
// clientAuth). Keys are ECDSA P-256, valid for a day.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	p, err := newPKI(dir)
	if err != nil {
		t.Fatalf("test PKI in %s: %v", dir, err)
	}
	return p
}

func newPKI(dir string) (*PKI, error) {
	p := &PKI{
		CACert:     filepath.Join(dir, "server", "cacert.pem"),
		ServerCert: filepath.Join(dir, "server", "servercert.pem"),
		ServerKey:  filepath.Join(dir, "server", "serverkey.pem"),
		ClientDir:  filepath.Join(dir, "client"),
	}
	for _, d := range []string{filepath.Dir(p.CACert), p.ClientDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	now := time.Now().Add(-time.Hour) // some slack for clocks
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"microvm test"}, CommonName: "microvm test CA"},
		NotBefore:             now,
		NotAfter:              now.Add(25 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) (cert, key []byte, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{Organization: []string{"microvm test"}, CommonName: cn},
			NotBefore:             now,
			NotAfter:              now.Add(25 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{usage},
			BasicConstraintsValid: true,
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("%s certificate: %w", cn, err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder), nil
	}
	srvCert, srvKey, err := leaf(2, "localhost", x509.ExtKeyUsageServerAuth, true)
	if err != nil {
		return nil, err
	}
	cliCert, cliKey, err := leaf(3, "microvm test client", x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return nil, err
	}
	caPEM := pemBlock("CERTIFICATE", caDER)
	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.CACert, caPEM},
		{p.ServerCert, srvCert},
		{p.ServerKey, srvKey},
		{filepath.Join(p.ClientDir, "cacert.pem"), caPEM},
		{filepath.Join(p.ClientDir, "clientcert.pem"), cliCert},
		{filepath.Join(p.ClientDir, "clientkey.pem"), cliKey},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
