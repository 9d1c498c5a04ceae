package digestcache

import (
	"encoding/binary"
	"unsafe"
)

// headerSize is the size of what the Cache writes before a value: the
// deadline, Unix ns, little endian.
const headerSize = 8

// NewEntry returns an entry usable until deadline (Unix ns), with room for
// a value of size bytes: append the value to it, then Put it.
func NewEntry(deadline int64, size int) []byte {
	return binary.LittleEndian.AppendUint64(make([]byte, 0, headerSize+size), uint64(deadline))
}

// deadline returns the deadline of entry, and false if it is too short to
// have one.
func deadline(entry []byte) (int64, bool) {
	if len(entry) < headerSize {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(entry)), true
}

// AppendString appends s to a value as a field that Reader.String and
// Reader.Bytes read: its length (4 bytes, little endian) and its bytes. A
// fixed-size length keeps the reads short enough to be inlined, which a
// hit of the verified-token cache, reading a dozen fields, feels.
func AppendString[T string | []byte](b []byte, s T) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// AppendStrings appends each of ss with AppendString.
func AppendStrings(b []byte, ss ...string) []byte {
	for _, s := range ss {
		b = AppendString(b, s)
	}
	return b
}

// Reader reads the fields of a value in the order they were appended: Byte
// a byte, Uint32 and Uint64 what binary.LittleEndian's AppendUint32 and
// AppendUint64 wrote, String and Bytes what AppendString wrote. The strings
// and slices it returns share the value's memory, which a Cache never
// changes. A value too short for a field yields zero values from there on,
// and OK then reports false.
type Reader struct {
	b   []byte
	bad bool
}

// NewReader returns a Reader of value.
func NewReader(value []byte) Reader { return Reader{b: value} }

// OK reports whether every field read so far was there.
func (r *Reader) OK() bool { return !r.bad }

func (r *Reader) fail() {
	r.b, r.bad = nil, true
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// Uint32 reads 4 bytes, little endian.
func (r *Reader) Uint32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

// Uint64 reads 8 bytes, little endian.
func (r *Reader) Uint64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// Bytes reads a field of AppendString. Its capacity ends with it, so that
// appending to it never writes the value.
func (r *Reader) Bytes() []byte {
	if len(r.b) >= 4 {
		if n := uint64(binary.LittleEndian.Uint32(r.b)) + 4; n <= uint64(len(r.b)) {
			b := r.b[4:n:n]
			r.b = r.b[n:]
			return b
		}
	}
	r.fail()
	return nil
}

// String reads a field of AppendString.
func (r *Reader) String() string {
	b := r.Bytes()
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Strings reads a field of AppendString into each of dst.
func (r *Reader) Strings(dst ...*string) {
	for _, s := range dst {
		*s = r.String()
	}
}
