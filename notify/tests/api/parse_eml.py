"""Parse .eml files with Python's email package (a real MIME parser) and print JSON:
[{"file", "subject", "to", "parts": [{"type", "params", "filename", "text"}]}]."""
import email, email.policy, json, sys

out = []
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        parts.append({
            "type": part.get_content_type(),
            "params": dict(part.get_params() or []),
            "filename": part.get_filename(),
            # Text parts travel with CRLF line breaks (RFC 2046 canonical form);
            # the decoder hands back LF, so put the canonical form back.
            "text": part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
            .replace("\r\n", "\n").replace("\n", "\r\n")
            if part.get_content_maintype() == "text" else "",
        })
    out.append({"file": path, "subject": str(msg["subject"]), "to": str(msg["to"]), "parts": parts})
print(json.dumps(out))
