// Package archtest holds the tests of the module's import graph: which
// packages may link which. It has no code of its own.
package archtest
