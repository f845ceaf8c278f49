package relay

import "fmt"

// Kind names a kind of job and the Go type of its args, so that producers ([Enqueue],
// [Kind.Job]) and the handler ([Handle]) agree at compile time: enqueueing args of another
// type does not compile, where a bare name would fail every such job at run time with
// [ReasonDecode]. Declare each kind once, next to its args type, and use it at both ends:
//
//	type EmailArgs struct{ To, Subject string }
//
//	var SendEmail = relay.NewKind[EmailArgs]("email")
//
// The name is what is stored with each job and what a client's handler is found by; the
// read side ([ListFilter], [JobRecord], [Job]) names kinds by it, since jobs may also be
// enqueued by other programs. Args of type []byte are stored as they are (see [Enqueue]);
// a Kind[json.RawMessage] sends JSON already encoded.
//
// The zero Kind has no name: Handle and Enqueue refuse it with [ErrInvalidJob].
type Kind[T any] struct{ name string }

// NewKind returns the kind named name whose jobs carry args of type T. The name is checked
// where the kind is used (non-empty, at most [MaxNameLen] bytes, UTF-8 without NUL bytes):
// [Handle] and [Enqueue] return an error wrapping [ErrInvalidJob] for an invalid one.
func NewKind[T any](name string) Kind[T] { return Kind[T]{name: name} }

// Name returns the kind's name, as stored with its jobs.
func (k Kind[T]) Name() string { return k.name }

// String returns the kind's name, so that a Kind prints as its name in logs and errors.
func (k Kind[T]) String() string { return k.name }

// Job returns one job of kind k for [EnqueueMany] and [EnqueueJobs], with options of its
// own that apply after those given to EnqueueMany.
func (k Kind[T]) Job(args T, opts ...EnqueueOption) JobSpec {
	return JobSpec{kind: k.name, args: args, opts: opts}
}

// JobSpec is one job for [EnqueueMany] and [EnqueueJobs], made by [Kind.Job].
type JobSpec struct {
	kind string
	args any
	opts []EnqueueOption
}

// validateKind checks a kind's name where it is used: a zero Kind (one not made with
// NewKind) is told apart from an over-long name.
func validateKind(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the kind has no name; make kinds with relay.NewKind", ErrInvalidJob)
	}
	return validateName("kind", name)
}
