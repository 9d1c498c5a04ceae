package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
)

// A record is one line of JSON, its members in this order:
//
//	{"seq":N,"prev":"<64 hex>","hash":"<64 hex>","time":…,"type":…,…}
//
// seq counts the records of the chain from 1; prev is the hash of the
// record before (64 zeros for the first); hash is the SHA-256 of the line
// without its `"hash":"…",` member, its canonical bytes. So a record's
// hash covers its place in the chain and everything before it.

// Link is a record's place in its chain: its sequence number and its hash.
// The zero Link is the genesis, the place before the first record.
type Link struct {
	Seq  uint64
	Hash [sha256.Size]byte
}

// String returns "seq N, hash <hex>".
func (l Link) String() string {
	return fmt.Sprintf("seq %d, hash %x", l.Seq, l.Hash)
}

// maxLine bounds a record's line: far above what appendBody writes with
// its caps, low enough that a reader of a hostile file holds little.
const maxLine = 64 << 10

const (
	openSeq    = `{"seq":`
	openPrev   = `,"prev":"`
	openHash   = `","hash":"`
	hashMember = len(`"hash":"",`) + 2*sha256.Size
)

var closeBrace = []byte{'}'}

// appendRecord appends to dst the line, without its newline, of the record
// that follows l for an event whose members are body (see appendBody), and
// returns that record's Link.
func (l Link) appendRecord(dst, body []byte) ([]byte, Link) {
	start := len(dst)
	next := Link{Seq: l.Seq + 1}
	dst = append(dst, openSeq...)
	dst = strconv.AppendUint(dst, next.Seq, 10)
	dst = append(dst, openPrev...)
	dst = hex.AppendEncode(dst, l.Hash[:])
	dst = append(dst, '"', ',')
	mark := len(dst)
	dst = append(dst, body...)
	dst = append(dst, '}')
	// The canonical bytes are written; the hash member goes in after prev.
	next.Hash = sha256.Sum256(dst[start:])
	var member [hashMember]byte
	n := copy(member[:], `"hash":"`)
	hex.Encode(member[n:], next.Hash[:])
	member[hashMember-2], member[hashMember-1] = '"', ','
	return slices.Insert(dst, mark, member[:]...), next
}

// digest hashes the canonical bytes of parsed records, which are not
// contiguous in their lines, allocating nothing per record.
type digest struct {
	h   hash.Hash
	out []byte
}

func newDigest() *digest { return &digest{h: sha256.New(), out: make([]byte, 0, sha256.Size)} }

func (d *digest) sum(a, b []byte) (sum [sha256.Size]byte) {
	d.h.Reset()
	d.h.Write(a)
	d.h.Write(b)
	d.out = d.h.Sum(d.out[:0])
	copy(sum[:], d.out)
	return sum
}

// parseRecord parses a record's line (without its newline) and checks that
// its hash is the SHA-256 of its canonical bytes. It returns the record's
// Link and its prev.
func parseRecord(line []byte, d *digest) (rec Link, prev [sha256.Size]byte, err error) {
	rest, ok := bytes.CutPrefix(line, []byte(openSeq))
	if !ok {
		return rec, prev, errors.New(`not an audit record (it does not start with {"seq":)`)
	}
	n := 0
	for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
		n++
	}
	if n == 0 || rest[0] == '0' {
		return rec, prev, errors.New("seq is not a positive integer")
	}
	if rec.Seq, err = strconv.ParseUint(string(rest[:n]), 10, 64); err != nil {
		return rec, prev, errors.New("seq is out of range")
	}
	rest = rest[n:]
	if rest, ok = bytes.CutPrefix(rest, []byte(openPrev)); !ok || !decodeHash(&prev, rest) {
		return rec, prev, errors.New("prev is not 64 lowercase hex digits after seq")
	}
	rest = rest[2*sha256.Size:]
	if rest, ok = bytes.CutPrefix(rest, []byte(openHash)); !ok || !decodeHash(&rec.Hash, rest) {
		return rec, prev, errors.New("hash is not 64 lowercase hex digits after prev")
	}
	rest = rest[2*sha256.Size:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`",`)); !ok || !bytes.HasSuffix(rest, closeBrace) || !json.Valid(line) {
		return rec, prev, errors.New("not a JSON object with members after hash")
	}
	// The canonical bytes: the line up to the hash member, and from the
	// member after it.
	if d.sum(line[:len(line)-len(rest)-hashMember], rest) != rec.Hash {
		return rec, prev, errors.New("the record was changed: its hash is not the SHA-256 of its content")
	}
	return rec, prev, nil
}

// decodeHash decodes the 64 lowercase hex digits at the start of s.
func decodeHash(dst *[sha256.Size]byte, s []byte) bool {
	if len(s) < 2*sha256.Size {
		return false
	}
	for i := range dst {
		hi, ok1 := lowerHex(s[2*i])
		lo, ok2 := lowerHex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

// BrokenError is a trail whose chain breaks at Line (counted from 1).
type BrokenError struct {
	Line   int
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Verify reads a trail, one record per line, and checks its chain from the
// genesis: each record's hash is that of its content, its seq follows the
// one before, and its prev is the hash of the record before. It returns
// the last record's Link, or a *BrokenError naming the first line that
// breaks the chain: an edited, deleted, moved or inserted line.
//
// Records removed from the end leave a shorter chain that is whole. To see
// that, compare the last Link with one kept elsewhere: the issuer logs its
// chain's head when it stops, and Stats reports its sequence number.
func Verify(r io.Reader) (Link, error) {
	var last Link
	d := newDigest()
	err := forEachLine(r, func(n int, line []byte) error {
		rec, prev, err := parseRecord(line, d)
		switch {
		case err != nil:
			return &BrokenError{n, err.Error()}
		case rec.Seq != last.Seq+1 && last.Seq == 0:
			return &BrokenError{n, fmt.Sprintf("seq %d where the chain starts at 1: the records before it are missing", rec.Seq)}
		case rec.Seq > last.Seq+1:
			return &BrokenError{n, fmt.Sprintf("seq %d after %d: %s missing before it", rec.Seq, last.Seq, records(rec.Seq-last.Seq-1))}
		case rec.Seq <= last.Seq:
			return &BrokenError{n, fmt.Sprintf("seq %d after %d: the record was moved, repeated or inserted", rec.Seq, last.Seq)}
		case prev != last.Hash && n == 1:
			return &BrokenError{n, "prev is not the genesis value"}
		case prev != last.Hash:
			return &BrokenError{n, fmt.Sprintf("prev is not the hash of line %d: that record was changed, or this one inserted", n-1)}
		}
		last = rec
		return nil
	})
	return last, err
}

// records returns "1 record is" or "n records are".
func records(n uint64) string {
	if n == 1 {
		return "1 record is"
	}
	return fmt.Sprintf("%d records are", n)
}

// forEachLine calls fn with each line of r, without its newline, numbered
// from 1, until fn or reading fails. A line longer than maxLine, and a last
// line without a newline (a write cut short), are *BrokenError.
func forEachLine(r io.Reader, fn func(n int, line []byte) error) error {
	br := bufio.NewReaderSize(r, maxLine)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if err := fn(n, line[:len(line)-1]); err != nil {
				return err
			}
		case errors.Is(err, bufio.ErrBufferFull):
			return &BrokenError{n, fmt.Sprintf("longer than %d bytes: not an audit record", maxLine)}
		case errors.Is(err, io.EOF) && len(line) == 0:
			return nil
		case errors.Is(err, io.EOF):
			return &BrokenError{n, "no newline at its end: the write of this record was cut short"}
		default:
			return err
		}
	}
}
