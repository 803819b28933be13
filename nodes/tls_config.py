"""``tls-config``: TLS files for an ``mqtt-broker`` (``usetls`` and ``tls``), as Node-RED 4 writes it.

``cert``, ``key`` and ``ca`` are file paths; ``verifyservercert`` checks the broker's certificate
and host name. The key's ``passphrase`` comes from Node-RED's credentials (a decrypted
``flows_cred.json``, or ``${NAME}``). Certificates uploaded into the editor (``certdata``, ``keydata``,
``cadata``) and ``alpnprotocol`` are refused: give files.
"""

from __future__ import annotations

import attrs

from evflow.runtime.nodeapi import ConfigNode, ConfigWarning, LooseBool, secret


@attrs.frozen(kw_only=True)
class TlsCredentials:
    # the private key's passphrase: ${NAME} in a flow file
    passphrase: str | None = secret()
    certdata: str | None = None
    keydata: str | None = None
    cadata: str | None = None


@attrs.frozen(kw_only=True)
class TlsConfigConfig:
    # client certificate file (PEM), for mutual TLS
    cert: str = ""
    # its private key file (PEM)
    key: str = ""
    # CA certificate file (PEM) that signed the broker's certificate; empty: the system's
    ca: str = ""
    certname: str = ""
    keyname: str = ""
    caname: str = ""
    servername: str = ""
    # check the broker's certificate and host name
    verifyservercert: LooseBool = True
    alpnprotocol: str = ""
    credentials: TlsCredentials | None = None


class TlsConfig(ConfigNode[TlsConfigConfig]):
    """TLS files, shared by the mqtt-broker nodes that name this one."""

    type = "tls-config"
    Config = TlsConfigConfig

    @classmethod
    def check(cls, config: TlsConfigConfig) -> list[ConfigWarning]:
        uploaded = config.certname or config.keyname or config.caname or (
            config.credentials is not None
            and (config.credentials.certdata or config.credentials.keydata or config.credentials.cadata))
        if uploaded:
            raise ValueError("certificates uploaded into Node-RED's editor are not supported: give file paths "
                             "in cert, key and ca @ $.certname")
        if config.alpnprotocol:
            raise ValueError("ALPN is not supported @ $.alpnprotocol")
        if config.key and not config.cert:
            raise ValueError("key needs cert @ $.cert")
        if config.servername:
            raise ValueError("servername (SNI other than the broker's host) is not supported @ $.servername")
        return []


__all__ = ["TlsConfig", "TlsConfigConfig"]
