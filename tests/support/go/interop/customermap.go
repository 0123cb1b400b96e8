package main

// The customer map (docs/audit.md, "Completeness") written again from its description, in Go, so that the
// Python ledger and verifier are not the only ones to say what its hashes are: the frozen vectors
// (tests/support/vectors/customer_map.json) and a real export's proof must come out the same here.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

const mapExtension = "caseledger/customers"

var emptyNode = make([]byte, 32)

func sum(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func customerKey(id string) []byte { return sum([]byte("caseledger/customers key\x00"), []byte(id)) }

func chainHead(eventHashes [][]byte) []byte {
	head := make([]byte, 32)
	for _, e := range eventHashes {
		head = sum([]byte{0x02}, head, e)
	}
	return head
}

func valueHash(count uint64, head []byte) []byte {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], count)
	return sum([]byte{0x03}, n[:], head)
}

func mapLeaf(key, value []byte) []byte  { return sum([]byte{0x00}, key, value) }
func mapNode(left, right []byte) []byte { return sum([]byte{0x01}, left, right) }
func keyBit(key []byte, depth int) int  { return int(key[depth/8]>>(7-depth%8)) & 1 }

type leafEntry struct{ key, value []byte }

// subtreeRoot: no key → 32 zero bytes; one key, at whatever depth → its leaf; more → split by the next bit.
func subtreeRoot(leaves []leafEntry, depth int) []byte {
	switch len(leaves) {
	case 0:
		return emptyNode
	case 1:
		return mapLeaf(leaves[0].key, leaves[0].value)
	}
	var left, right []leafEntry
	for _, l := range leaves {
		if keyBit(l.key, depth) == 0 {
			left = append(left, l)
		} else {
			right = append(right, l)
		}
	}
	return mapNode(subtreeRoot(left, depth+1), subtreeRoot(right, depth+1))
}

type mapProof struct {
	Kind       string   `json:"kind"`
	Siblings   []string `json:"siblings"`
	OtherKey   string   `json:"other_key"`
	OtherValue string   `json:"other_value"`
}

// rootFromProof folds the proof up from where the customer's path ends, deepest sibling first.
func rootFromProof(customer string, count uint64, head []byte, p mapProof) ([]byte, error) {
	key := customerKey(customer)
	var node []byte
	switch p.Kind {
	case "leaf":
		node = mapLeaf(key, valueHash(count, head))
	case "empty", "other":
		if count != 0 {
			return nil, fmt.Errorf("a non-inclusion proof for a customer with %d events", count)
		}
		node = emptyNode
		if p.Kind == "other" {
			other, err := base64.StdEncoding.DecodeString(p.OtherKey)
			if err != nil {
				return nil, err
			}
			value, err := base64.StdEncoding.DecodeString(p.OtherValue)
			if err != nil {
				return nil, err
			}
			if bytes.Equal(other, key) {
				return nil, errors.New("the other leaf is the customer's own")
			}
			for d := range p.Siblings {
				if keyBit(other, d) != keyBit(key, d) {
					return nil, errors.New("the other leaf is off the customer's path")
				}
			}
			node = mapLeaf(other, value)
		}
	default:
		return nil, fmt.Errorf("unknown proof kind %q", p.Kind)
	}
	for i, s := range p.Siblings {
		sibling, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, err
		}
		if keyBit(key, len(p.Siblings)-1-i) == 1 {
			node = mapNode(sibling, node)
		} else {
			node = mapNode(node, sibling)
		}
	}
	return node, nil
}

type vectorFile struct {
	Customers map[string][]string `json:"customers"`
	Root      string              `json:"root"`
	Proofs    []struct {
		CustomerID  string   `json:"customer_id"`
		Key         string   `json:"key"`
		EventHashes []string `json:"event_hashes"`
		Count       uint64   `json:"count"`
		Head        string   `json:"head"`
		Value       string   `json:"value"`
		Proof       mapProof `json:"proof"`
	} `json:"proofs"`
}

// liveFile: what the test read of a real export — its (cosigned) checkpoint, its customer, the hashes of the
// customer's committed events in leaf order, and the export's map proof.
type liveFile struct {
	Checkpoint  string   `json:"checkpoint"`
	CustomerID  string   `json:"customer_id"`
	EventHashes []string `json:"event_hashes"`
	Proof       mapProof `json:"proof"`
}

func hexAll(in []string) ([][]byte, error) {
	out := make([][]byte, len(in))
	for i, s := range in {
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func checkCustomerMap(args []string) (any, error) {
	fs := flag.NewFlagSet("customermap", flag.ContinueOnError)
	vectors := fs.String("vectors", "", "the frozen vectors (tests/support/vectors/customer_map.json)")
	live := fs.String("live", "", "a real export's checkpoint, customer, event hashes and map proof (JSON)")
	keyFile := fs.String("key", "", "with --live: the verifier key file, as `caseledger audit key` wrote it")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *vectors != "" {
		return checkVectors(*vectors)
	}
	return checkLive(*live, *keyFile)
}

func checkVectors(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(v.Customers))
	for id := range v.Customers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	leaves := make([]leafEntry, 0, len(ids))
	for _, id := range ids {
		events, err := hexAll(v.Customers[id])
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, leafEntry{customerKey(id), valueHash(uint64(len(events)), chainHead(events))})
	}
	root := base64.StdEncoding.EncodeToString(subtreeRoot(leaves, 0))
	if root != v.Root {
		return nil, fmt.Errorf("the map of the vectors' customers has root %s here, %s in the vectors", root, v.Root)
	}
	for _, p := range v.Proofs {
		events, err := hexAll(p.EventHashes)
		if err != nil {
			return nil, err
		}
		head := chainHead(events)
		if b64 := base64.StdEncoding.EncodeToString(customerKey(p.CustomerID)); b64 != p.Key {
			return nil, fmt.Errorf("%s: key %s here, %s in the vectors", p.CustomerID, b64, p.Key)
		}
		if b64 := base64.StdEncoding.EncodeToString(head); b64 != p.Head {
			return nil, fmt.Errorf("%s: chain head %s here, %s in the vectors", p.CustomerID, b64, p.Head)
		}
		if b64 := base64.StdEncoding.EncodeToString(valueHash(uint64(len(events)), head)); b64 != p.Value {
			return nil, fmt.Errorf("%s: value %s here, %s in the vectors", p.CustomerID, b64, p.Value)
		}
		got, err := rootFromProof(p.CustomerID, uint64(len(events)), head, p.Proof)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.CustomerID, err)
		}
		if base64.StdEncoding.EncodeToString(got) != v.Root {
			return nil, fmt.Errorf("%s: its %s proof does not lead to the root", p.CustomerID, p.Proof.Kind)
		}
	}
	return map[string]any{"root": v.Root, "customers": len(ids), "proofs": len(v.Proofs)}, nil
}

func checkLive(path, keyFile string) (any, error) {
	verifier, err := readVerifier(keyFile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l liveFile
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, err
	}
	c, err := openCheckpoint([]byte(l.Checkpoint), verifier)
	if err != nil {
		return nil, err
	}
	var signed []byte
	for _, line := range strings.Split(c.Extension, "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && name == mapExtension {
			if signed, err = base64.StdEncoding.DecodeString(value); err != nil {
				return nil, err
			}
		}
	}
	if signed == nil {
		return nil, fmt.Errorf("the checkpoint has no %s line", mapExtension)
	}
	events, err := hexAll(l.EventHashes)
	if err != nil {
		return nil, err
	}
	got, err := rootFromProof(l.CustomerID, uint64(len(events)), chainHead(events), l.Proof)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, signed) {
		return nil, errors.New("the customer's events and the export's proof do not lead to the signed map root")
	}
	return map[string]any{"tree_size": c.N, "events": len(events), "kind": l.Proof.Kind}, nil
}
