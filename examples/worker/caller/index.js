// A second Worker that calls the ztgate example over a service binding with Workers RPC:
// `env.ZTGATE.record_note(credential, note)`, a method of the Rust Worker's entrypoint that no
// HTTP request can reach. The ztgate Worker proves the credential (the same route table and
// pipeline as its HTTP routes) before anything is stored.
//
// A real caller holds its own credential (an HMAC token it mints with ZTGATE_RPC_KEYS for
// purpose rpc:record_note, or an Access service token). This one forwards what it is given, so
// that examples/worker/e2e.mjs can try valid, missing, forged and misdirected credentials:
//
//   POST /call {"credential": {"signed_token": "v2..."}, "note": "text"}
//     -> 200 with the RPC method's answer: {"status": 201, "notes": 3, "by": "signed:..."}
//        or {"status": 401, "code": "invalid_credential", "message": "..."}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method !== "POST" || url.pathname !== "/call") {
      return Response.json({ code: "not_found" }, { status: 404 });
    }
    const { credential, note } = await request.json();
    const answer = await env.ZTGATE.record_note(credential, note);
    return Response.json(answer);
  },
};
