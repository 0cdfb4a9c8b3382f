package scope

// Verdict is the policy's answer for a key on a request.
type Verdict uint8

const (
	// Pass: forward the request.
	Pass Verdict = iota
	// Forbidden (403): the request itself shows it is out of the key's scope.
	Forbidden
	// CheckObject: forward only once the object's server is known to be
	// the key's; an object of another server, or an unknown one, is 404.
	CheckObject
	// CheckResponse: as CheckObject, but when the object's server is not
	// known the response may be forwarded only if it names the key's server.
	CheckResponse
)

var verdictNames = [...]string{"pass", "forbidden", "check_object", "check_response"}

func (v Verdict) String() string { return verdictNames[v] }

// Decide returns the verdict on m for a server-restricted key of server.
// Standard keys are not restricted: the caller passes them without asking.
func Decide(m Match, server string) Verdict {
	r := m.Route
	if r == nil {
		return Forbidden // a route the table does not know
	}
	switch r.Restricted {
	case Allow:
		return Pass
	case OwnServer:
		// Named, and exactly the key's: a server-addressed route that names
		// none is not given the key's own server.
		if m.Server != "" && m.Server == server {
			return Pass
		}
		return Forbidden
	case OwnObject:
		return CheckObject
	case OwnObjectResponse:
		if m.Head {
			// No body to check: the object's server is needed first, so
			// that another inbox's object answers as a missing one does.
			return CheckObject
		}
		return CheckResponse
	}
	return Forbidden
}
