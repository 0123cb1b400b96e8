package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"filippo.io/torchwood"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

// checkInclusion proves each (leaf index, event hash) in the served checkpoint's tree from the served
// tiles alone, twice: sumdb/tlog's ProveRecord and CheckRecord over its TileHashReader, and torchwood's
// client reading the entry from its bundle (which checks it against the tiles too).
func checkInclusion(args []string) (any, error) {
	var indexes, hashes string
	withEntries := true
	s, err := servedFlags("inclusion", args, func(fs *flag.FlagSet) {
		fs.StringVar(&indexes, "index", "", "leaf indexes, comma-separated")
		fs.StringVar(&hashes, "hash", "", "their event hashes (hex), comma-separated, in the same order")
		fs.BoolVar(&withEntries, "entries", true, "also read each entry from its bundle (false: a tree without events)")
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	c, _, err := s.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	is, hs := strings.Split(indexes, ","), strings.Split(hashes, ",")
	if indexes == "" || len(is) != len(hs) {
		return nil, errors.New("give as many -hash as -index")
	}
	reader := tlog.TileHashReader(c.Tree, tileReader{ctx, s})
	client, err := torchwood.NewClient(s.fetcher)
	if err != nil {
		return nil, err
	}
	for k := range is {
		index, err := strconv.ParseInt(is[k], 10, 64)
		if err != nil {
			return nil, err
		}
		want, err := hex.DecodeString(hs[k])
		if err != nil {
			return nil, err
		}
		p, err := tlog.ProveRecord(c.N, index, reader)
		if err != nil {
			return nil, fmt.Errorf("tlog.ProveRecord(%d, %d): %w", c.N, index, err)
		}
		if err := tlog.CheckRecord(p, c.N, c.Hash, index, tlog.RecordHash(want)); err != nil {
			return nil, fmt.Errorf("tlog.CheckRecord of leaf %d: %w", index, err)
		}
		if !withEntries {
			continue
		}
		entry, _, err := client.Entry(ctx, c.Tree, index)
		if err != nil {
			return nil, fmt.Errorf("torchwood Client.Entry(%d): %w", index, err)
		}
		if !bytes.Equal(entry, want) {
			return nil, fmt.Errorf("entry %d is %x, not the event hash %x", index, entry, want)
		}
	}
	return map[string]any{"size": c.N, "proved": len(is)}, nil
}

// checkConsistency proves from the served tiles that the served checkpoint extends one the auditor kept.
func checkConsistency(args []string) (any, error) {
	var old string
	s, err := servedFlags("consistency", args, func(fs *flag.FlagSet) {
		fs.StringVar(&old, "old", "", "a checkpoint file the auditor kept")
	})
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(old)
	if err != nil {
		return nil, err
	}
	kept, err := openCheckpoint(data, s.verifier)
	if err != nil {
		return nil, fmt.Errorf("the kept checkpoint: %w", err)
	}
	ctx := context.Background()
	c, _, err := s.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	if kept.Origin != c.Origin {
		return nil, fmt.Errorf("the kept checkpoint is of log %q, the served one of %q", kept.Origin, c.Origin)
	}
	if kept.N > c.N {
		return nil, fmt.Errorf("rolled back: the kept checkpoint commits to %d entries, the served one to %d", kept.N, c.N)
	}
	if kept.N == 0 {
		return map[string]any{"old": 0, "new": c.N, "proof": 0}, nil
	}
	p, err := tlog.ProveTree(c.N, kept.N, tlog.TileHashReader(c.Tree, tileReader{ctx, s}))
	if err != nil {
		return nil, fmt.Errorf("tlog.ProveTree(%d, %d): %w", c.N, kept.N, err)
	}
	if err := tlog.CheckTree(p, c.N, c.Hash, kept.N, kept.Hash); err != nil {
		return nil, fmt.Errorf("tlog.CheckTree: %w", err)
	}
	hashes := make([][]byte, len(p))
	for i := range p {
		hashes[i] = p[i][:]
	}
	err = proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(kept.N), uint64(c.N), hashes, kept.Hash[:], c.Hash[:])
	if err != nil {
		return nil, fmt.Errorf("transparency-dev/merkle VerifyConsistency of tlog's proof: %w", err)
	}
	return map[string]any{"old": kept.N, "new": c.N, "proof": len(p)}, nil
}

// checkEntries reads every entry of the served log with torchwood's client, which checks each one
// against the tiles and the tiles against the checkpoint; it prints the entries (event hashes, hex).
func checkEntries(args []string) (any, error) {
	s, err := servedFlags("entries", args, nil)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	c, _, err := s.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	client, err := torchwood.NewClient(s.fetcher)
	if err != nil {
		return nil, err
	}
	entries := make([]string, 0, c.N)
	for int64(len(entries)) < c.N {
		before := len(entries)
		for i, entry := range client.Entries(ctx, c.Tree, int64(len(entries))) {
			if i != int64(len(entries)) {
				return nil, fmt.Errorf("entry %d came after %d entries", i, len(entries))
			}
			entries = append(entries, hex.EncodeToString(entry))
		}
		if err := client.Err(); err != nil {
			return nil, fmt.Errorf("torchwood Client.Entries: %w", err)
		}
		if len(entries) == before {
			return nil, fmt.Errorf("torchwood Client.Entries stopped at %d of %d entries", before, c.N)
		}
	}
	return map[string]any{"size": c.N, "entries": entries}, nil
}
