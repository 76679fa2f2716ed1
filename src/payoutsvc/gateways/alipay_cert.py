"""Alipay public-key certificate mode (公钥证书模式): the certificate serial numbers.

In certificate mode every request carries ``app_cert_sn`` (the SN of the app's public-key
certificate that Alipay issued) and ``alipay_root_cert_sn`` (the SNs of Alipay's root
bundle), and every answer names the ``alipay_cert_sn`` of the Alipay certificate it was
signed with. Alipay computes these the way its Java SDK does
(``AntCertificationUtil.getRootCertSN`` / ``AbstractAlipayClient.getCertSN`` in
alipay/alipay-sdk-java-all; ``antcertutil.ts`` in alipay/alipay-sdk-nodejs-all computes the
same for Alipay's certificates):

- one certificate's SN: ``md5_hex(issuer + serial)``, where ``issuer`` is Java's
  ``X500Principal.getName()`` (RFC 2253: RDNs last-first, joined by ``,`` without spaces,
  ``CN=…,OU=…,O=…,C=…``) and ``serial`` the serial number in decimal; the hex is 32 digits
  (the Java SDK pads the ``BigInteger`` hex back to 32);
- the root SN: the SNs of every certificate in the root bundle whose signature algorithm is
  RSA-based (OID prefix ``1.2.840.113549.1.1``: sha1WithRSA, sha256WithRSA, …) joined by
  ``_``, in file order; the bundle's SM2 and ECDSA roots are skipped.

The DER is read here directly rather than through ``cryptography``'s parser: Alipay's real
root bundle holds an ECDSA root ("Ant Financial Certification Authority E1") whose signature
algorithm carries parameters that parser refuses, and Java's issuer string (``#hex`` for
attributes without an RFC 2253 keyword, ``=`` and ``#`` escaped) is not RFC 4514's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

RSA_SIGNATURE_OID_PREFIX = "1.2.840.113549.1.1."
_PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----"
)

# RFC 2253's attribute keywords, the only ones Java's X500Principal.getName() emits; any
# other attribute type is written as its dotted OID with a #hex value.
_RFC2253_KEYWORDS = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
# The string types Java renders as text (AVA.isDerString), with the charset it decodes them
# with; any other value type is written #hex.
_STRING_CHARSETS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x1B: "ascii",  # GeneralString
    0x14: "latin-1",  # T61String
    0x1E: "utf-16-be",  # BMPString
}
_ESCAPED = frozenset(',=+<>#;"\\')

_SEQUENCE, _SET, _INTEGER, _OID, _VERSION = 0x30, 0x31, 0x02, 0x06, 0xA0


class CertificateError(ValueError):
    """A certificate (or bundle) that cannot be read."""


@dataclass(frozen=True, slots=True)
class _Element:
    tag: int
    start: int  # where the whole element (tag, length, content) starts
    content: int  # where its content starts
    end: int


def _element(der: bytes, at: int, limit: int) -> _Element:
    if at + 2 > limit:
        raise CertificateError("truncated DER")
    tag, length = der[at], der[at + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateError("unexpected high-tag-number DER element")
    content = at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or content + count > limit:
            raise CertificateError("bad DER length")
        length = int.from_bytes(der[content : content + count], "big")
        content += count
    end = content + length
    if end > limit:
        raise CertificateError("truncated DER")
    return _Element(tag, at, content, end)


def _children(der: bytes, parent: _Element) -> list[_Element]:
    children, at = [], parent.content
    while at < parent.end:
        child = _element(der, at, parent.end)
        children.append(child)
        at = child.end
    return children


def _oid(der: bytes, element: _Element) -> str:
    if element.tag != _OID or element.end == element.content:
        raise CertificateError("expected an OBJECT IDENTIFIER")
    body = der[element.content : element.end]
    first = body[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(str(arc) for arc in arcs)


def _escape(value: str) -> str:
    chars = ["\\" + c if c in _ESCAPED else "\\00" if c == "\0" else c for c in value]
    # Leading and trailing spaces (and CRs) are escaped too, as Java does.
    lead = 0
    while lead < len(chars) and chars[lead] in (" ", "\r"):
        chars[lead] = "\\" + chars[lead]
        lead += 1
    trail = len(chars) - 1
    while trail >= lead and chars[trail] in (" ", "\r"):
        chars[trail] = "\\" + chars[trail]
        trail -= 1
    return "".join(chars)


def _attribute(der: bytes, element: _Element) -> str:
    parts = _children(der, element)
    if element.tag != _SEQUENCE or len(parts) != 2:
        raise CertificateError("bad AttributeTypeAndValue")
    oid, value = _oid(der, parts[0]), parts[1]
    keyword = _RFC2253_KEYWORDS.get(oid)
    charset = _STRING_CHARSETS.get(value.tag)
    if keyword is not None and charset is not None:
        try:
            text = der[value.content : value.end].decode(charset)
        except UnicodeDecodeError:
            raise CertificateError(f"undecodable {keyword} value") from None
        return f"{keyword}={_escape(text)}"
    return f"{keyword or oid}=#{der[value.start : value.end].hex()}"


def _rfc2253(der: bytes, name: _Element) -> str:
    """Java's ``X500Principal.getName()`` of a DER Name: last RDN first."""
    if name.tag != _SEQUENCE:
        raise CertificateError("bad Name")
    rdns = []
    for rdn in _children(der, name):
        if rdn.tag != _SET:
            raise CertificateError("bad RelativeDistinguishedName")
        rdns.append("+".join(_attribute(der, a) for a in _children(der, rdn)))
    return ",".join(reversed(rdns))


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the SN computation reads from one certificate."""

    issuer: str  # Java's RFC 2253 form
    serial_number: int
    signature_algorithm: str  # dotted OID of the outer signatureAlgorithm

    @property
    def sn(self) -> str:
        return hashlib.md5(  # noqa: S324  (Alipay's identifier, not a security hash)
            (self.issuer + str(self.serial_number)).encode("utf-8")
        ).hexdigest()

    @property
    def rsa_signed(self) -> bool:
        return self.signature_algorithm.startswith(RSA_SIGNATURE_OID_PREFIX)


def certificate_facts(der: bytes) -> CertificateFacts:
    top = _element(der, 0, len(der))
    parts = _children(der, top) if top.tag == _SEQUENCE else []
    if len(parts) != 3 or parts[0].tag != _SEQUENCE or parts[1].tag != _SEQUENCE:
        raise CertificateError("not an X.509 certificate")
    tbs = _children(der, parts[0])
    if tbs and tbs[0].tag == _VERSION:
        tbs = tbs[1:]
    if len(tbs) < 3 or tbs[0].tag != _INTEGER:
        raise CertificateError("bad TBSCertificate")
    serial = int.from_bytes(der[tbs[0].content : tbs[0].end], "big", signed=True)
    algorithm = _children(der, parts[1])
    if not algorithm:
        raise CertificateError("bad signatureAlgorithm")
    return CertificateFacts(_rfc2253(der, tbs[2]), serial, _oid(der, algorithm[0]))


def pem_certificates(text: str) -> list[bytes]:
    """The DER of every certificate in a PEM file, in file order."""
    blocks = []
    for match in _PEM_BLOCK.finditer(text):
        try:
            blocks.append(base64.b64decode("".join(match["body"].split()), validate=True))
        except binascii.Error:
            raise CertificateError("a PEM certificate block is not base64") from None
    if not blocks:
        raise CertificateError("no PEM certificate found")
    return blocks


def cert_sn(pem: str) -> str:
    """The SN of a certificate file's (first) certificate, as ``app_cert_sn`` is sent."""
    return certificate_facts(pem_certificates(pem)[0]).sn


def root_cert_sn(pem: str) -> str:
    """``alipay_root_cert_sn`` of a root bundle: its RSA-signed certificates' SNs, ``_``-joined."""
    sns = [facts.sn for facts in map(certificate_facts, pem_certificates(pem)) if facts.rsa_signed]
    if not sns:
        raise CertificateError("the root bundle holds no RSA-signed certificate")
    return "_".join(sns)


def certificate_public_key(pem: str) -> rsa.RSAPublicKey:
    """The RSA public key of a certificate file's (first) certificate."""
    try:
        key = x509.load_der_x509_certificate(pem_certificates(pem)[0]).public_key()
    except ValueError as exc:
        raise CertificateError(f"unreadable certificate: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError("expected a certificate for an RSA key")
    return key
