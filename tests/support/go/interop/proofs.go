package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// proofFile is what caseledger writes with proofs in it: `audit prove --json` and a JSON history export
// (a checkpoint and events with their inclusion proofs), `audit consistency --json` (a kept tree head, the
// latest checkpoint and the consistency proof between them).
type proofFile struct {
	Checkpoint   string `json:"checkpoint"`
	Transparency struct {
		Checkpoint string `json:"checkpoint"`
	} `json:"transparency"`
	Events []struct {
		EventHash      string   `json:"event_hash"`
		StoredBytes    *string  `json:"stored_bytes_base64"`
		LeafIndex      *uint64  `json:"leaf_index"`
		InclusionProof []string `json:"inclusion_proof"`
	} `json:"events"`
	Held *struct {
		TreeSize uint64 `json:"tree_size"`
		Root     string `json:"root"`
	} `json:"held"`
	LatestCheckpoint string   `json:"latest_checkpoint"`
	ConsistencyProof []string `json:"consistency_proof"`
}

func decodeAll(items []string) ([][]byte, error) {
	out := make([][]byte, len(items))
	for i, item := range items {
		b, err := base64.StdEncoding.DecodeString(item)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// checkProofs verifies, with transparency-dev/merkle, every proof in a file caseledger wrote, against a
// checkpoint the file carries, signed by the key (note.Open, formats/log).
func checkProofs(args []string) (any, error) {
	fs := flag.NewFlagSet("proofs", flag.ContinueOnError)
	file := fs.String("file", "", "the JSON file")
	keyFile := fs.String("key", "", "the verifier key file, as `caseledger audit key` wrote it")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	verifier, err := readVerifier(*keyFile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return nil, err
	}
	var doc proofFile
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Held != nil {
		latest, err := openCheckpoint([]byte(doc.LatestCheckpoint), verifier)
		if err != nil {
			return nil, fmt.Errorf("latest_checkpoint: %w", err)
		}
		root, err := base64.StdEncoding.DecodeString(doc.Held.Root)
		if err != nil {
			return nil, err
		}
		hashes, err := decodeAll(doc.ConsistencyProof)
		if err != nil {
			return nil, err
		}
		err = proof.VerifyConsistency(rfc6962.DefaultHasher, doc.Held.TreeSize, uint64(latest.N), hashes, root,
			latest.Hash[:])
		if err != nil {
			return nil, fmt.Errorf("VerifyConsistency %d → %d: %w", doc.Held.TreeSize, latest.N, err)
		}
		return map[string]any{"consistency": []uint64{doc.Held.TreeSize, uint64(latest.N)}}, nil
	}
	note := doc.Checkpoint
	if note == "" {
		note = doc.Transparency.Checkpoint
	}
	c, err := openCheckpoint([]byte(note), verifier)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	proved := 0
	for i, e := range doc.Events {
		digest, err := hex.DecodeString(e.EventHash)
		if err != nil {
			return nil, fmt.Errorf("event %d: event_hash: %w", i, err)
		}
		if e.StoredBytes != nil {
			stored, err := base64.StdEncoding.DecodeString(*e.StoredBytes)
			if err != nil {
				return nil, err
			}
			if sum := sha256.Sum256(stored); !bytes.Equal(sum[:], digest) {
				return nil, fmt.Errorf("event %d: its stored bytes do not hash to its event_hash", i)
			}
		}
		if e.LeafIndex == nil || e.InclusionProof == nil {
			continue // recorded after the checkpoint
		}
		hashes, err := decodeAll(e.InclusionProof)
		if err != nil {
			return nil, err
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(digest)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, *e.LeafIndex, uint64(c.N), leaf, hashes, c.Hash[:]); err != nil {
			return nil, fmt.Errorf("event %d (leaf %d): VerifyInclusion: %w", i, *e.LeafIndex, err)
		}
		proved++
	}
	if proved == 0 {
		return nil, errors.New("no inclusion proof in the file")
	}
	return map[string]any{"size": c.N, "inclusion": proved}, nil
}
