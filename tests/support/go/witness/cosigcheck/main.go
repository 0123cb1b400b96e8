// Command cosigcheck verifies a cosigned checkpoint with Go's reference code: the log's signature with
// golang.org/x/mod/sumdb/note, each witness's cosignature with torchwood's CosignatureVerifier.
//
//	cosigcheck -log VKEY -witness VKEY [-witness VKEY …] < checkpoint
//
// It prints the names of the keys whose signatures verified, one a line, and exits 1 when the log's
// signature or any witness's cosignature is missing or does not verify.
package main

import (
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
)

type keys []string

func (k *keys) String() string     { return strings.Join(*k, ",") }
func (k *keys) Set(v string) error { *k = append(*k, v); return nil }

// publicOnly is a crypto.Signer that only knows its public key: enough for torchwood to build the verifier.
type publicOnly ed25519.PublicKey

func (p publicOnly) Public() crypto.PublicKey { return ed25519.PublicKey(p) }
func (p publicOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("verification only")
}

func witnessVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness key %q", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, fmt.Errorf("witness key %q is not a cosignature/v1 Ed25519 key", vkey)
	}
	s, err := torchwood.NewCosignatureSigner(parts[0], publicOnly(raw[1:]))
	if err != nil {
		return nil, err
	}
	v := s.Verifier()
	if v.String() != vkey {
		return nil, fmt.Errorf("torchwood computes the witness key %q, not %q", v.String(), vkey)
	}
	return v, nil
}

func main() {
	logKey := flag.String("log", "", "the log's verifier key")
	var witnesses keys
	flag.Var(&witnesses, "witness", "a witness's cosignature/v1 verifier key (repeatable)")
	flag.Parse()
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(1)
	}
	logVerifier, err := note.NewVerifier(*logKey)
	if err != nil {
		fail("log key: %v", err)
	}
	verifiers := []note.Verifier{logVerifier}
	for _, w := range witnesses {
		v, err := witnessVerifier(w)
		if err != nil {
			fail("%v", err)
		}
		verifiers = append(verifiers, v)
	}
	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the checkpoint: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail("note.Open: %v", err)
	}
	if _, err := torchwood.ParseCheckpoint(n.Text); err != nil {
		fail("not a checkpoint: %v", err)
	}
	verified := map[string]bool{}
	for _, sig := range n.Sigs {
		verified[sig.Name] = true
		fmt.Println(sig.Name)
	}
	for _, v := range verifiers {
		if !verified[v.Name()] {
			fail("no valid signature of %s", v.Name())
		}
	}
}
