// Command interop checks caseledger's transparency log with Go's reference libraries, one check per
// subcommand, for tests/system/test_go_interop.py:
//
//	checkpoint   the served checkpoint: golang.org/x/mod/sumdb/note (the key file as `caseledger audit key`
//	             wrote it), github.com/transparency-dev/formats/log and filippo.io/torchwood parse it
//	inclusion    events by leaf index: golang.org/x/mod/sumdb/tlog proves them from the served tiles
//	             (TileHashReader, ProveRecord, CheckRecord), torchwood's client reads their entry bundles
//	consistency  a kept checkpoint against the served one, from the served tiles (ProveTree, CheckTree),
//	             the same proof checked again by transparency-dev/merkle
//	entries      every entry of the log through torchwood's tiles client, each checked against the tiles
//	proofs       a file of `caseledger audit prove --json`, `audit consistency --json` or a history export:
//	             transparency-dev/merkle's VerifyInclusion and VerifyConsistency
//
// Each prints one JSON object on success and exits 0; on failure it prints why on stderr and exits 1.
//
//	customermap  the customer map's hashing written again in Go: the frozen vectors (--vectors) and a real
//	             export's completeness proof against its signed checkpoint's caseledger/customers line (--live)
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"filippo.io/torchwood"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// commands: one check each. The witnesses' cosignatures are checked in Go by tests/support/go/witness
// (cosigcheck, with torchwood's CosignatureVerifier), beside the real witness.
var commands = map[string]func(args []string) (any, error){
	"checkpoint":  checkCheckpoint,
	"inclusion":   checkInclusion,
	"consistency": checkConsistency,
	"entries":     checkEntries,
	"proofs":      checkProofs,
	"customermap": checkCustomerMap,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		names := make([]string, 0, len(commands))
		for name := range commands {
			names = append(names, name)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: interop {%s} [flags]\n", strings.Join(names, "|"))
		os.Exit(2)
	}
	result, err := commands[os.Args[1]](os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

// served is what a subcommand that reads the served log is given: where, as whom, and the key it trusts.
type served struct {
	url      string // the tiles' prefix, e.g. http://127.0.0.1:8080/v1/log/
	token    string // a bearer token of a role that may read the log
	verifier note.Verifier
	fetcher  *torchwood.TileFetcher
}

func servedFlags(name string, args []string, more func(*flag.FlagSet)) (*served, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	url := fs.String("url", "", "the log's prefix (…/v1/log/)")
	keyFile := fs.String("key", "", "the verifier key file, as `caseledger audit key` wrote it")
	if more != nil {
		more(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	verifier, err := readVerifier(*keyFile)
	if err != nil {
		return nil, err
	}
	s := &served{url: strings.TrimSuffix(*url, "/") + "/", token: os.Getenv("CASELEDGER_TOKEN"), verifier: verifier}
	client := &http.Client{Timeout: 20 * time.Second, Transport: bearer{s.token}}
	s.fetcher, err = torchwood.NewTileFetcher(s.url, torchwood.WithHTTPClient(client))
	return s, err
}

// readVerifier reads the key file exactly as it is: note.NewVerifier must accept what `audit key` wrote.
func readVerifier(path string) (note.Verifier, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(string(data))
	if err != nil {
		return nil, fmt.Errorf("note.NewVerifier refuses the key file %s as it is: %w", path, err)
	}
	return v, nil
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// openCheckpoint verifies a signed checkpoint with note.Open and parses it with both Go parsers.
func openCheckpoint(data []byte, v note.Verifier) (torchwood.Checkpoint, error) {
	n, err := note.Open(data, note.VerifierList(v))
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("note.Open: %w", err)
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("torchwood.ParseCheckpoint: %w", err)
	}
	parsed, rest, _, err := log.ParseCheckpoint(data, c.Origin, v)
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("formats/log.ParseCheckpoint: %w", err)
	}
	if parsed.Size != uint64(c.N) || string(parsed.Hash) != string(c.Hash[:]) || string(rest) != c.Extension {
		return torchwood.Checkpoint{}, errors.New("formats/log and torchwood read different checkpoints")
	}
	return c, nil
}

func (s *served) checkpoint(ctx context.Context) (torchwood.Checkpoint, []byte, error) {
	data, err := s.fetcher.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		return torchwood.Checkpoint{}, nil, err
	}
	c, err := openCheckpoint(data, s.verifier)
	return c, data, err
}

func checkpointJSON(c torchwood.Checkpoint) map[string]any {
	return map[string]any{"origin": c.Origin, "size": c.N, "root": base64.StdEncoding.EncodeToString(c.Hash[:]),
		"extension": c.Extension}
}

func checkCheckpoint(args []string) (any, error) {
	var out string
	s, err := servedFlags("checkpoint", args, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "also write the checkpoint, as served, to this file")
	})
	if err != nil {
		return nil, err
	}
	c, data, err := s.checkpoint(context.Background())
	if err != nil {
		return nil, err
	}
	if out != "" {
		if err := os.WriteFile(out, data, 0o644); err != nil {
			return nil, err
		}
	}
	return checkpointJSON(c), nil
}

// tileReader is sumdb/tlog's TileReader over the served C2SP paths (tlog's own paths are tile/8/…).
type tileReader struct {
	ctx context.Context
	s   *served
}

func (r tileReader) Height() int { return torchwood.TileHeight }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		path := "tile/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", t.H))
		body, err := get(r.ctx, r.s, path)
		if err != nil {
			return nil, err
		}
		data[i] = body
	}
	return data, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func get(ctx context.Context, s *served, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}
