// Package auth is keygate's API key check, free of Caddy: it reads a key
// from an Authorization header, rejects malformed keys offline, digests the
// rest and answers from the cache or the store ([Verifier]); and it creates,
// reveals and deletes keys so that the cache never contradicts the store
// ([Manager]). It gathers, in memory, when each key was last used
// ([Usage]) and what it did per hour ([Activity]), for the app to write in
// batches.
package auth
