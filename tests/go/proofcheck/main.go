// proofcheck: the independent verifier of Verity's proofs, built only on
// Go's golang.org/x/mod/sumdb/note and sumdb/tlog (Debian package
// golang-golang-x-mod-dev, compiled offline in GOPATH mode). Nothing here
// shares code with Verity's C verifier.
//
//	proofcheck lines VKEY        JSON proofs on stdin, one per line; prints
//	                             "ok" or "fail: <why>" per line
//	proofcheck note VKEY FILE    note.Open on a checkpoint note; exit 0 = accepted
//	proofcheck tiles URL VKEY    tile client: fetch URL/checkpoint, verify it,
//	                             rebuild the root from URL/tile/... and check
//	                             every entry bundle against the level-0 tiles
//	proofcheck cosig VKEY NAME WITNESSVKEY FILE  checks an Ed25519 cosignature
//	                             (tlog-cosignature v1, type 0x04) line in FILE
//	proofcheck export VKEY FILE  a sharing gateway export (docs/SHARING.md):
//	                             every partition's tree note opens with VKEY,
//	                             every proof line's leaf is in its tree
//	                             (tlog.CheckRecord), every record lies in the
//	                             batch of the proof line before it
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func openCheckpoint(msg string, v note.Verifier) (checkpoint, error) {
	var c checkpoint
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil {
		return c, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return c, errors.New("checkpoint text too short")
	}
	c.origin = lines[0]
	if c.size, err = strconv.ParseInt(lines[1], 10, 64); err != nil || c.size < 0 ||
		strconv.FormatInt(c.size, 10) != lines[1] {
		return c, errors.New("bad tree size line")
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return c, errors.New("bad root hash line")
	}
	copy(c.root[:], h)
	return c, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("bad proof hash %d", i)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

type proofJSON struct {
	Type          string   `json:"type"`
	Index         int64    `json:"index"`
	TreeSize      int64    `json:"tree_size"`
	Offset        int64    `json:"offset"`
	Leaf          string   `json:"leaf"`
	LeafHash      string   `json:"leaf_hash"`
	Proof         []string `json:"proof"`
	Checkpoint    string   `json:"checkpoint"`
	TlogProof     string   `json:"tlog_proof"`
	OldSize       int64    `json:"old_size"`
	NewSize       int64    `json:"new_size"`
	OldCheckpoint string   `json:"old_checkpoint"`
	NewCheckpoint string   `json:"new_checkpoint"`
}

func checkInclusion(p proofJSON, v note.Verifier) error {
	c, err := openCheckpoint(p.Checkpoint, v)
	if err != nil {
		return err
	}
	if c.size != p.TreeSize {
		return errors.New("tree_size differs from the signed checkpoint")
	}
	leaf, err := base64.StdEncoding.DecodeString(p.Leaf)
	if err != nil || len(leaf) != 76 {
		return errors.New("bad leaf data")
	}
	lh := tlog.RecordHash(leaf)
	if base64.StdEncoding.EncodeToString(lh[:]) != p.LeafHash {
		return errors.New("leaf_hash is not the RFC 6962 hash of leaf")
	}
	base := int64(binary.LittleEndian.Uint64(leaf[0:8]))
	count := int64(binary.LittleEndian.Uint32(leaf[8:12]))
	if p.Offset < base || p.Offset >= base+count {
		return errors.New("offset is not in the leaf's batch")
	}
	proof, err := hashes(p.Proof)
	if err != nil {
		return err
	}
	if err := tlog.CheckRecord(tlog.RecordProof(proof), c.size, c.root, p.Index, lh); err != nil {
		return err
	}
	if p.TlogProof != "" {
		return checkTlogProof(p.TlogProof, v, leaf)
	}
	return nil
}

// checkTlogProof parses the c2sp.org/tlog-proof@v1 text on its own.
func checkTlogProof(text string, v note.Verifier, leaf []byte) error {
	parts := strings.SplitN(text, "\n\n", 2)
	if len(parts) != 2 {
		return errors.New("tlog-proof: no blank line")
	}
	lines := strings.Split(parts[0], "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return errors.New("tlog-proof: bad header")
	}
	lines = lines[1:]
	var extra []byte
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		var err error
		if extra, err = base64.StdEncoding.DecodeString(lines[0][6:]); err != nil {
			return errors.New("tlog-proof: bad extra")
		}
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return errors.New("tlog-proof: no index line")
	}
	index, err := strconv.ParseInt(lines[0][6:], 10, 64)
	if err != nil {
		return errors.New("tlog-proof: bad index")
	}
	proof, err := hashes(lines[1:])
	if err != nil {
		return err
	}
	c, err := openCheckpoint(parts[1], v)
	if err != nil {
		return err
	}
	if len(extra) < 84 || !bytes.Equal(extra[:76], leaf) {
		return errors.New("tlog-proof: extra does not start with the leaf data")
	}
	return tlog.CheckRecord(tlog.RecordProof(proof), c.size, c.root, index, tlog.RecordHash(extra[:76]))
}

func checkConsistency(p proofJSON, v note.Verifier) error {
	a, err := openCheckpoint(p.OldCheckpoint, v)
	if err != nil {
		return err
	}
	b, err := openCheckpoint(p.NewCheckpoint, v)
	if err != nil {
		return err
	}
	if a.origin != b.origin || a.size != p.OldSize || b.size != p.NewSize {
		return errors.New("sizes or origins differ from the signed checkpoints")
	}
	proof, err := hashes(p.Proof)
	if err != nil {
		return err
	}
	return tlog.CheckTree(tlog.TreeProof(proof), b.size, b.root, a.size, a.root)
}

func lines(vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var p proofJSON
		if err := json.Unmarshal(in.Bytes(), &p); err != nil {
			fmt.Fprintf(out, "fail: json: %v\n", err)
			continue
		}
		switch p.Type {
		case "inclusion":
			err = checkInclusion(p, v)
		case "consistency":
			err = checkConsistency(p, v)
		default:
			err = errors.New("unknown proof type")
		}
		if err != nil {
			fmt.Fprintf(out, "fail: %v\n", err)
		} else {
			fmt.Fprintln(out, "ok")
		}
	}
	return in.Err()
}

// ---- tile client ------------------------------------------------------------

type tileReader struct {
	prefix string
	saved  map[string][]byte
}

func (r *tileReader) Height() int { return 8 }

// c2spPath maps Go's tile to the C2SP tlog-tiles path (no height element).
func c2spPath(t tlog.Tile) string {
	p := t.Path() // tile/8/L/N[.p/W] or tile/8/data/N[.p/W]
	p = strings.TrimPrefix(p, "tile/8/")
	p = strings.Replace(p, "data/", "entries/", 1)
	return "tile/" + p
}

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := get(r.prefix + "/" + c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func tiles(prefix, vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	cp, err := get(prefix + "/checkpoint")
	if err != nil {
		return err
	}
	c, err := openCheckpoint(string(cp), v)
	if err != nil {
		return err
	}
	tr := &tileReader{prefix: prefix}
	tree := tlog.Tree{N: c.size, Hash: c.root}
	hr := tlog.TileHashReader(tree, tr)
	// TileHashReader checks every tile it reads against the signed root.
	root, err := tlog.TreeHash(c.size, hr)
	if err != nil {
		return err
	}
	if root != c.root {
		return errors.New("root rebuilt from tiles differs from the checkpoint")
	}
	// Entry bundles: every entry must hash to its leaf in the level-0 tile.
	for n := int64(0); n*256 < c.size; n++ {
		w := c.size - n*256
		if w > 256 {
			w = 256
		}
		t := tlog.Tile{H: 8, L: -1, N: n, W: int(w)}
		data, err := get(prefix + "/" + c2spPath(t))
		if err != nil {
			return err
		}
		for i := int64(0); i < w; i++ {
			if len(data) < 2 {
				return errors.New("entry bundle too short")
			}
			l := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+l {
				return errors.New("entry bundle truncated")
			}
			entry := data[2 : 2+l]
			data = data[2+l:]
			want, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, n*256+i)})
			if err != nil {
				return err
			}
			if tlog.RecordHash(entry) != want[0] {
				return fmt.Errorf("entry %d does not match its leaf hash", n*256+i)
			}
		}
		if len(data) != 0 {
			return errors.New("entry bundle has trailing bytes")
		}
	}
	fmt.Printf("ok: %s size %d root %s rebuilt from tiles\n", c.origin, c.size, c.root)
	return nil
}

// ---- cosignature --------------------------------------------------------------

func cosig(logVkey, witnessVkey, file string) error {
	v, err := note.NewVerifier(logVkey)
	if err != nil {
		return err
	}
	msg, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return err
	}
	// witness vkey: name+hash+base64(0x04||pub)
	parts := strings.SplitN(witnessVkey, "+", 3)
	if len(parts) != 3 {
		return errors.New("bad witness key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		return errors.New("bad witness key material")
	}
	for _, s := range n.UnverifiedSigs {
		if s.Name != parts[0] {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || len(sig) != 4+8+64 {
			return errors.New("bad cosignature encoding")
		}
		ts := binary.BigEndian.Uint64(sig[4:12])
		m := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, n.Text)
		if !ed25519.Verify(ed25519.PublicKey(raw[1:]), []byte(m), sig[12:]) {
			return errors.New("cosignature does not verify")
		}
		fmt.Printf("ok: cosigned by %s at %d\n", s.Name, ts)
		return nil
	}
	return errors.New("no cosignature by the witness")
}

type exportTree struct {
	Size int64  `json:"size"`
	Note string `json:"note"`
}

type exportLine struct {
	Type      string   `json:"type"`
	Topic     string   `json:"topic"`
	Partition int64    `json:"partition"`
	Offset    int64    `json:"offset"`
	Index     int64    `json:"index"`
	Leaf      string   `json:"leaf"`
	Proof     []string `json:"proof"`
	Sources   []struct {
		Topic     string      `json:"topic"`
		Partition int64       `json:"partition"`
		Tree      *exportTree `json:"tree"`
	} `json:"sources"`
}

// export checks the proofs of an export independently of Verity's C code
// (the gateway's manifest signature and body digest are not its business).
func export(vkey, file string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	text := strings.TrimSuffix(string(data), "\n")
	all := strings.Split(text, "\n")
	var m exportLine
	if err := json.Unmarshal([]byte(all[len(all)-1]), &m); err != nil || m.Type != "manifest" {
		return errors.New("no manifest")
	}
	trees := map[string]checkpoint{}
	for _, s := range m.Sources {
		if s.Tree == nil {
			continue
		}
		c, err := openCheckpoint(s.Tree.Note, v)
		if err != nil {
			return fmt.Errorf("tree note of %s/%d: %v", s.Topic, s.Partition, err)
		}
		if c.size != s.Tree.Size || !strings.HasSuffix(c.origin, fmt.Sprintf("/%s/%d", s.Topic, s.Partition)) {
			return fmt.Errorf("tree note of %s/%d names another tree", s.Topic, s.Partition)
		}
		trees[fmt.Sprintf("%s/%d", s.Topic, s.Partition)] = c
	}
	type span struct{ base, count int64 }
	cur := map[string]span{}
	records, proven := 0, 0
	for i, l := range all[:len(all)-1] {
		var e exportLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			return fmt.Errorf("line %d: %v", i+1, err)
		}
		key := fmt.Sprintf("%s/%d", e.Topic, e.Partition)
		switch e.Type {
		case "proof":
			c, ok := trees[key]
			if !ok {
				return fmt.Errorf("line %d: proof without a tree", i+1)
			}
			leaf, err := base64.StdEncoding.DecodeString(e.Leaf)
			if err != nil || len(leaf) != 76 {
				return fmt.Errorf("line %d: bad leaf", i+1)
			}
			p, err := hashes(e.Proof)
			if err != nil {
				return fmt.Errorf("line %d: %v", i+1, err)
			}
			if err := tlog.CheckRecord(tlog.RecordProof(p), c.size, c.root, e.Index, tlog.RecordHash(leaf)); err != nil {
				return fmt.Errorf("line %d: %v", i+1, err)
			}
			cur[key] = span{int64(binary.LittleEndian.Uint64(leaf[0:8])), int64(binary.LittleEndian.Uint32(leaf[8:12]))}
		case "record":
			records++
			if s, ok := cur[key]; ok && e.Offset >= s.base && e.Offset < s.base+s.count {
				proven++
			} else {
				return fmt.Errorf("line %d: record %s/%d has no proof", i+1, key, e.Offset)
			}
		}
	}
	fmt.Printf("ok: %d records, all proven against %d signed trees\n", records, len(trees))
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "lines":
		err = lines(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "note":
		var v note.Verifier
		if v, err = note.NewVerifier(os.Args[2]); err == nil {
			var msg []byte
			if msg, err = os.ReadFile(os.Args[3]); err == nil {
				_, err = note.Open(msg, note.VerifierList(v))
			}
		}
		if err == nil {
			fmt.Println("ok: note.Open accepted the checkpoint")
		}
	case len(os.Args) == 4 && os.Args[1] == "tiles":
		err = tiles(os.Args[2], os.Args[3])
	case len(os.Args) == 5 && os.Args[1] == "cosig":
		err = cosig(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 4 && os.Args[1] == "export":
		err = export(os.Args[2], os.Args[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: proofcheck lines VKEY | note VKEY FILE | tiles URL VKEY | cosig LOGVKEY WITNESSVKEY FILE | export VKEY FILE")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proofcheck:", err)
		os.Exit(1)
	}
}
