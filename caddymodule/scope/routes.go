package scope

// Class is a route's class in the inbox API.
type Class uint8

const (
	// ACCT routes are account-wide and name no server.
	ACCT Class = iota
	// MGMT routes create, update or delete an inbox.
	MGMT
	// SRV routes name their server in the path or the server parameter.
	SRV
	// OBJ routes name a message, attachment or preview; the server is the
	// object's.
	OBJ
)

var classNames = [...]string{"ACCT", "MGMT", "SRV", "OBJ"}

func (c Class) String() string { return classNames[c] }

// Rule is what a server-restricted key may do on a route.
type Rule uint8

const (
	// Deny: 403 for a restricted key.
	Deny Rule = iota
	// Allow: a restricted key may call it (nothing of another inbox is
	// reachable through it).
	Allow
	// OwnServer: only with the key's own server named in the path or the
	// server parameter; any other server, or none, is 403.
	OwnServer
	// OwnObject: only for an object of the key's server; the object's
	// server is needed before the request goes upstream, and an object of
	// another server, or an unknown one, is 404.
	OwnObject
	// OwnObjectResponse: like OwnObject, but the answer carries the
	// object's server, so it may be checked on the response when the
	// object is not known yet.
	OwnObjectResponse
)

var ruleNames = [...]string{"deny", "allow", "own_server", "own_object", "own_object_response"}

func (r Rule) String() string { return ruleNames[r] }

// Kind is the kind of object a route names.
type Kind uint8

const (
	NoObject Kind = iota
	Message
	Attachment
	Preview
)

var kindNames = [...]string{"", "message", "attachment", "preview"}

func (k Kind) String() string { return kindNames[k] }

// Teaches says what a route's successful response reveals about objects,
// so that later requests for them can be decided. Message lists are not
// read: they would cost every list call a parse, and a message not learned
// is checked on its own fetch or looked up once.
type Teaches uint8

const (
	TeachesNothing Teaches = iota
	// TeachesMessage: the body is one message with its server and
	// attachments.
	TeachesMessage
	// TeachesPreviews: the body is {"items":[previews]} minted from the
	// request's message.
	TeachesPreviews
)

// Route is one route of the API.
type Route struct {
	ID     string // the inbox API document's name, e.g. "M5"
	Method string
	// Path with parameters in braces: {server} names the server; {message},
	// {attachment}, {preview} and {device} name objects. Matched
	// case-insensitively.
	Path string
	// ServerInQuery: the route names its server in the server parameter.
	ServerInQuery bool
	Class         Class
	Restricted    Rule
	Teaches       Teaches

	segments []string
	param    int // index of the segment with the {server} or object parameter, or -1
	object   Kind
}

// Object returns the kind of object the route names.
func (rt *Route) Object() Kind { return rt.object }

// InboxAPI is the inbox API's routes, as every official client calls them
// (inbox-api.md). A new route is one line.
var InboxAPI = []Route{
	{ID: "S1", Method: "GET", Path: "/api/servers", Class: ACCT, Restricted: Deny},
	{ID: "S2", Method: "POST", Path: "/api/servers", Class: MGMT, Restricted: Deny},
	{ID: "S3", Method: "GET", Path: "/api/servers/{server}", Class: SRV, Restricted: OwnServer},
	{ID: "S4", Method: "GET", Path: "/api/servers/{server}/password", Class: SRV, Restricted: OwnServer},
	{ID: "S5", Method: "PUT", Path: "/api/servers/{server}", Class: MGMT, Restricted: Deny},
	{ID: "S6", Method: "DELETE", Path: "/api/servers/{server}", Class: MGMT, Restricted: Deny},
	{ID: "M1", Method: "GET", Path: "/api/messages", ServerInQuery: true, Class: SRV, Restricted: OwnServer},
	{ID: "M2", Method: "DELETE", Path: "/api/messages", ServerInQuery: true, Class: SRV, Restricted: OwnServer},
	{ID: "M3", Method: "POST", Path: "/api/messages/search", ServerInQuery: true, Class: SRV, Restricted: OwnServer},
	{ID: "M4", Method: "POST", Path: "/api/messages", ServerInQuery: true, Class: SRV, Restricted: OwnServer, Teaches: TeachesMessage},
	{ID: "M5", Method: "GET", Path: "/api/messages/{message}", Class: OBJ, Restricted: OwnObjectResponse, Teaches: TeachesMessage},
	{ID: "M6", Method: "DELETE", Path: "/api/messages/{message}", Class: OBJ, Restricted: OwnObject},
	{ID: "M7", Method: "POST", Path: "/api/messages/{message}/forward", Class: OBJ, Restricted: OwnObject, Teaches: TeachesMessage},
	{ID: "M8", Method: "POST", Path: "/api/messages/{message}/reply", Class: OBJ, Restricted: OwnObject, Teaches: TeachesMessage},
	{ID: "M9", Method: "POST", Path: "/api/messages/{message}/screenshots", Class: OBJ, Restricted: OwnObject, Teaches: TeachesPreviews},
	{ID: "F1", Method: "GET", Path: "/api/files/attachments/{attachment}", Class: OBJ, Restricted: OwnObject},
	{ID: "F2", Method: "GET", Path: "/api/files/email/{message}", Class: OBJ, Restricted: OwnObject},
	{ID: "F3", Method: "GET", Path: "/api/files/screenshots/{preview}", Class: OBJ, Restricted: OwnObject},
	{ID: "A1", Method: "GET", Path: "/api/analysis/spam/{message}", Class: OBJ, Restricted: OwnObject},
	{ID: "A2", Method: "GET", Path: "/api/analysis/deliverability/{message}", Class: OBJ, Restricted: OwnObject},
	{ID: "P1", Method: "GET", Path: "/api/screenshots/clients", Class: ACCT, Restricted: Allow},
	{ID: "U1", Method: "GET", Path: "/api/usage/limits", Class: ACCT, Restricted: Deny},
	{ID: "U2", Method: "GET", Path: "/api/usage/transactions", Class: ACCT, Restricted: Deny},
	{ID: "D1", Method: "GET", Path: "/api/devices", Class: ACCT, Restricted: Deny},
	{ID: "D2", Method: "POST", Path: "/api/devices", Class: ACCT, Restricted: Deny},
	{ID: "D3", Method: "GET", Path: "/api/devices/{device}/otp", Class: ACCT, Restricted: Deny},
	{ID: "D4", Method: "POST", Path: "/api/devices/otp", Class: ACCT, Restricted: Deny},
	{ID: "D5", Method: "DELETE", Path: "/api/devices/{device}", Class: ACCT, Restricted: Deny},
}
