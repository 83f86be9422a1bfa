"""Drive a Jupyter kernel as Jupyter does."""


def run_in_kernel(kernel_name: str, code: str, timeout: float = 120) -> str:
    """Start the named kernel with jupyter_client (as Jupyter does), run code, return stdout."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    chunks: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            chunks.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            chunks.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])

    try:
        kc.execute_interactive(code, timeout=timeout, output_hook=collect)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(chunks)
