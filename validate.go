package relay

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// The checks every public entry point shares. Each refuses, before any statement is sent,
// a value that PostgreSQL would reject — which would abort the caller's transaction — or
// would store as something else (a count cut to 32 bits), with an error that names the
// value and the limit.

// checkDB refuses a nil db, also a typed nil such as a (*pgxpool.Pool)(nil) or a nil pgx.Tx
// held in the interface: a call on it would panic.
func checkDB(db any, fn string) error {
	if isNil(db) {
		return fmt.Errorf("%w: %s needs a pgx.Tx, *pgxpool.Pool, *pgxpool.Conn or *pgx.Conn", ErrNilDB, fn)
	}
	return nil
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// checkText says why PostgreSQL's text type cannot hold s (nil if it can): a NUL byte, or
// bytes that are not UTF-8.
func checkText(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("holds a NUL byte (at byte %d), which PostgreSQL text cannot store", i)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8 (at byte %d)", invalidUTF8At(s))
	}
	return nil
}

func invalidUTF8At(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// validateName checks a kind or queue name of a job; the error wraps ErrInvalidJob.
func validateName(what, name string) error { return checkName(ErrInvalidJob, what, name) }

// checkName checks a kind or queue name: non-empty, at most MaxNameLen bytes, text
// PostgreSQL can store. The error wraps sentinel.
func checkName(sentinel error, what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s is empty", sentinel, what)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %s %.20q… is %d bytes long, the limit is %d", sentinel, what, name, len(name), MaxNameLen)
	}
	if err := checkText(name); err != nil {
		return fmt.Errorf("%w: %s %q %w", sentinel, what, name, err)
	}
	return nil
}

// checkQueueName checks a queue name given to a queue function or in Config.Queues: the
// error wraps ErrInvalidConfig, and ErrInvalidJob as such errors always did.
func checkQueueName(name string) error {
	return alsoMatching(checkName(ErrInvalidConfig, "queue", name), ErrInvalidJob)
}

// alsoMatching returns err, with its text, matching the sentinels more as well: for an
// error that belongs to two families (args too large are an invalid job too).
func alsoMatching(err error, more ...error) error {
	if err == nil {
		return nil
	}
	return &multiSentinel{err: err, more: more}
}

type multiSentinel struct {
	err  error
	more []error
}

func (e *multiSentinel) Error() string   { return e.err.Error() }
func (e *multiSentinel) Unwrap() []error { return append([]error{e.err}, e.more...) }

// maxKeyLen is the longest order or unique key, in bytes.
const maxKeyLen = 256

// validateKey checks an order or unique key: at most maxKeyLen bytes of storable text.
func validateKey(what, key string) error {
	if len(key) > maxKeyLen {
		return fmt.Errorf("%w: the %s is %d bytes long, the limit is %d", ErrInvalidJob, what, len(key), maxKeyLen)
	}
	if err := checkText(key); err != nil {
		return fmt.Errorf("%w: the %s %q %w", ErrInvalidJob, what, key, err)
	}
	return nil
}

// maxCount bounds every count relay stores in an integer column (max_attempts,
// global_limit): a larger int would reach the database cut to its low 32 bits.
const maxCount = math.MaxInt32

// checkCount checks that n is a count from least to maxCount.
func checkCount(sentinel error, what string, n, least int) error {
	if n < least || n > maxCount {
		return fmt.Errorf("%w: %s must be between %d and %d, got %d", sentinel, what, least, maxCount, n)
	}
	return nil
}

// The times relay can store: PostgreSQL's timestamptz starts on 4714-11-24 BC (year -4713
// in Go's proleptic Gregorian calendar); it ends in 294276 AD, but the wakeup of a job
// carries its run_at in microseconds since 1970 as a bigint, which ends on 294247-01-10.
var (
	minTimestamp = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	maxTimestamp = time.UnixMicro(math.MaxInt64).UTC()
)

// checkTime checks that relay can store t.
func checkTime(sentinel error, what string, t time.Time) error {
	if t.Before(minTimestamp) || t.Truncate(time.Microsecond).After(maxTimestamp) {
		return fmt.Errorf("%w: %s %v is outside the times relay can store (%v to %v)", sentinel, what, t, minTimestamp, maxTimestamp)
	}
	return nil
}

// runAtParam is the run_at a job is stored with: zero for now, an instant before the
// earliest relay can store as that earliest (a past time means now, and the job keeps its
// place ahead of later ones). A time past the latest is refused.
func runAtParam(t time.Time) (time.Time, error) {
	switch {
	case t.IsZero():
		return t, nil
	case t.Before(minTimestamp):
		return minTimestamp, nil
	}
	if err := checkTime(ErrInvalidJob, "RunAt", t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// DefaultMaxSize is the default of every limit on the bytes a job's values take: its args
// or payload ([MaxArgsSize]), its output and its checkpoint ([Config].MaxOutputSize and
// MaxCheckpointSize). 1 MiB.
const DefaultMaxSize = 1 << 20

// DefaultMaxMetadataSize is the default limit on the bytes a job's metadata takes as JSON
// ([MaxMetadataSize]): 64 KiB. Metadata is meant for a few short strings (a trace context,
// a request id, a tenant), and every claim of the job carries it.
const DefaultMaxMetadataSize = 64 << 10

// sizeLimit is one limit on the size of a value relay stores with a job: what it bounds,
// the option or Config field that sets it, and its default, for the error that names it. A
// new value stored with jobs gets one more of these, and an option or field to set it.
type sizeLimit struct {
	what, setting string
	def           int
}

var (
	argsLimit       = sizeLimit{"args", "relay.MaxArgsSize", DefaultMaxSize}
	payloadLimit    = sizeLimit{"[]byte payload", "relay.MaxArgsSize", DefaultMaxSize}
	outputLimit     = sizeLimit{"output", "Config.MaxOutputSize", DefaultMaxSize}
	checkpointLimit = sizeLimit{"checkpoint", "Config.MaxCheckpointSize", DefaultMaxSize}
	metadataLimit   = sizeLimit{"metadata", "relay.MaxMetadataSize", DefaultMaxMetadataSize}
)

// check refuses n bytes over limit with an error wrapping ErrTooLarge. whose names the job
// ("of kind \"email\"", "of job 12"), called only for the error: enqueueing is a hot path.
func (l sizeLimit) check(n, limit int, whose func() string) error {
	if n <= limit {
		return nil
	}
	return fmt.Errorf("%w: %s %s: %d bytes, over the limit of %d set by %s (default %d); raise the limit, or store the data elsewhere and pass a reference",
		ErrTooLarge, l.what, whose(), n, limit, l.setting, l.def)
}

// sizeSetting validates a size limit given as an option or Config field: 0 takes the
// default, a negative one is refused.
func sizeSetting(sentinel error, l sizeLimit, n int) (int, error) {
	switch {
	case n == 0:
		return l.def, nil
	case n < 0:
		return 0, fmt.Errorf("%w: %s must not be negative, got %d (0 for the default, %d)", sentinel, l.setting, n, l.def)
	}
	return n, nil
}

// checkJSON says why PostgreSQL's jsonb would refuse b (nil if it takes it). b is JSON as
// encoding/json produces it, so syntactically valid; what jsonb refuses on top is bytes
// that are not UTF-8 (a json.RawMessage or MarshalJSON may hold them), the escape \u0000,
// a \u escape of half a surrogate pair, and numbers outside the range of its numeric type.
func checkJSON(b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("the JSON is not valid UTF-8 (at byte %d)", invalidUTF8At(string(b)))
	}
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			end, err := checkJSONString(b, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || ('0' <= c && c <= '9'):
			end := i + 1
			for end < len(b) && strings.IndexByte("0123456789.eE+-", b[end]) >= 0 {
				end++
			}
			if err := checkJSONNumber(b[i:end]); err != nil {
				return err
			}
			i = end - 1
		}
	}
	return nil
}

// checkJSONString checks the string whose contents start at b[i] and returns the index of
// its closing quote.
func checkJSONString(b []byte, i int) (int, error) {
	for ; i < len(b) && b[i] != '"'; i++ {
		if b[i] != '\\' {
			continue
		}
		i++
		if b[i] != 'u' {
			continue
		}
		r := hex4(b[i+1 : i+5])
		i += 4
		switch {
		case r == 0:
			return 0, fmt.Errorf(`a JSON string holds \u0000 (a NUL character), which PostgreSQL's jsonb cannot store`)
		case 0xD800 <= r && r < 0xDC00: // the first half of a pair: the second must follow
			if i+6 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
				if low := hex4(b[i+3 : i+7]); 0xDC00 <= low && low < 0xE000 {
					i += 6
					continue
				}
			}
			return 0, fmt.Errorf(`a JSON string holds \u%04x, half a surrogate pair, which PostgreSQL's jsonb refuses`, r)
		case 0xDC00 <= r && r < 0xE000:
			return 0, fmt.Errorf(`a JSON string holds \u%04x, half a surrogate pair, which PostgreSQL's jsonb refuses`, r)
		}
	}
	return i, nil
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// The bounds of PostgreSQL's numeric type, in which jsonb keeps numbers: digits from
// 10^131071 down to 10^-16383 (a weight of 32767 base-10000 digits before the point, a
// display scale of 16383 after it), and an exponent of less than INT_MAX/2 as written.
const (
	numericMaxWeight   = math.MaxInt16 // base-10000 digits before the point, less one
	numericMinWeight   = math.MinInt16
	numericMaxScale    = 0x3FFF // digits after the point, as written: trailing zeros count
	numericMaxExponent = math.MaxInt32/2 - 1
)

// checkJSONNumber checks a JSON number as PostgreSQL's numeric input does.
func checkJSONNumber(num []byte) error {
	if len(num) <= numericMaxScale && bytes.IndexAny(num, "eE") < 0 {
		return nil // too few digits to be out of range: the common case, without allocating
	}
	s := string(num)
	mantissa, exponent, hasExp := strings.Cut(strings.ToLower(strings.TrimPrefix(s, "-")), "e")
	intPart, frac, _ := strings.Cut(mantissa, ".")
	exp := 0
	if hasExp {
		digits := strings.TrimLeft(strings.TrimLeft(exponent, "+-"), "0")
		if len(digits) > 10 {
			return numberError(s)
		}
		e := 0
		for _, c := range digits {
			e = e*10 + int(c-'0')
		}
		if e > numericMaxExponent {
			return numberError(s)
		}
		exp = e
		if strings.HasPrefix(exponent, "-") {
			exp = -e
		}
	}
	if max(len(frac)-exp, 0) > numericMaxScale {
		return numberError(s)
	}
	// The decimal position of the first digit that is not zero decides the weight.
	var pos int
	if i := strings.IndexFunc(intPart, func(r rune) bool { return r != '0' }); i >= 0 {
		pos = len(intPart) - 1 - i + exp
	} else if i := strings.IndexFunc(frac, func(r rune) bool { return r != '0' }); i >= 0 {
		pos = -(i + 1) + exp
	} else {
		return nil // zero: its weight is 0 whatever the exponent
	}
	if weight := floorDiv(pos, 4); weight > numericMaxWeight || weight < numericMinWeight {
		return numberError(s)
	}
	return nil
}

func numberError(num string) error {
	if len(num) > 40 {
		num = num[:20] + "…" + num[len(num)-10:]
	}
	return fmt.Errorf("the JSON number %s is outside the range of PostgreSQL's numeric type, in which jsonb keeps numbers", num)
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// storableText returns s with what PostgreSQL text cannot hold — NUL bytes and bytes that
// are not UTF-8 — written as \xNN. It is for the error text and stack of an attempt, which
// a handler decides and which must never keep the attempt's outcome from being written.
func storableText(s string) string {
	if checkText(s) == nil {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0 || (r == utf8.RuneError && size == 1) {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// cutText cuts s, valid UTF-8 (as storableText makes it), to at most limit bytes, at a
// character's boundary, noting how many bytes were cut; the note makes the result up to 30
// bytes longer than limit.
func cutText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && cut > limit-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes cut)", s[:cut], len(s)-cut)
}
