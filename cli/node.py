"""`nhr node`: provincial nodes (issue 16 item 4, docs/nodes.md): node certificates and serving
the public API together with the mutual-TLS node-to-node listener."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Provincial nodes: certificates and the node-to-node listener", no_args_is_help=True)
console = Console()


@app.command("init-tls")
def init_tls(province: str = typer.Option(..., help="the node's province, e.g. PK-PB"),
             ca_dir: Path = typer.Option(..., help="the federation CA's directory (ca.pem, ca.key); created if empty"),
             out: Path = typer.Option(..., help="where to write node.pem and node.key"),
             host: list[str] = typer.Option(["localhost", "127.0.0.1"], help="names and addresses the node is reached at")):
    """Issue a node certificate (TLS server and client identity, and the key that signs its caller
    assertions). The CA key stays with whoever admits nodes: give each node only ca.pem."""
    from security.nodes.identity import create_ca, issue_node

    if not (ca_dir / "ca.pem").exists():
        create_ca(ca_dir)
        console.print(f"created the federation CA in {ca_dir} (keep ca.key offline; give nodes ca.pem)")
    cert, key = issue_node(ca_dir, province, out, hosts=tuple(host))
    console.print(f"{province}: {cert} and {key}; set NHR_NODE_TLS_CERT, NHR_NODE_TLS_KEY, NHR_NODE_TLS_CA={ca_dir / 'ca.pem'}")


@app.command("serve")
def serve(host: str = typer.Option(None, help="address of both listeners (default: NHR_HOST)"),
          port: int = typer.Option(None, help="the public API's port (default: NHR_PORT)"),
          node_port: int = typer.Option(None, help="the node-to-node port, mutual TLS (default: NHR_NODE_LISTEN_PORT)")):
    """Run the public API and the node-to-node listener (mutual TLS required) in one process."""
    import uvicorn

    from api.app import create_app
    from api.nodes.app import create_node_app
    from registry.runtime import Runtime
    from registry.settings import get_settings

    s = get_settings()
    rt = Runtime.build(s)
    host = host or s.serve.host
    public = uvicorn.Server(uvicorn.Config(create_app(s, rt), host=host, port=port or s.serve.port, access_log=False,
                                           proxy_headers=False, log_level="info"))
    node = uvicorn.Server(uvicorn.Config(
        create_node_app(rt), host=host, port=node_port or s.node.listen_port, lifespan="off", access_log=False,
        log_level="info", ssl_certfile=str(s.node.tls_cert), ssl_keyfile=str(s.node.tls_key),
        ssl_ca_certs=str(s.node.tls_ca), ssl_cert_reqs=ssl.CERT_REQUIRED))

    async def both() -> None:
        async def follow() -> None:  # either stopping (a signal reaches one of them) stops the other
            while not (public.should_exit or node.should_exit):
                await asyncio.sleep(0.2)
            public.should_exit = node.should_exit = True

        await asyncio.gather(public.serve(), node.serve(), follow())

    asyncio.run(both())
