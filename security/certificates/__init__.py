"""Verifiable vaccination certificates in the EU DCC / WHO DDCC:VS HCERT format (issue 6).

`base45` (RFC 9285), `cose` (COSE_Sign1, RFC 9052, ES256/PS256), `hcert` (the HC1 pipeline and
its error classes), `trust` (kid -> signer certificate), `issuer` (document-signer keys)."""
