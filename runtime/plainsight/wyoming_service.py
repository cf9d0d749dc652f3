"""A Wyoming microphone service that sends only masked audio (Home Assistant voice).

One input session (the mic command, or a connection to an upstream Wyoming mic service)
runs while at least one client is connected. Its audio goes through a fresh
`StreamProcessor`, hop by hop, exactly as in `plainsight stream`, and every masked hop is
sent to every connected client as one `audio-chunk`. When the input ends, clients get
`audio-stop` and are disconnected (a client that reconnects starts a fresh session).
Fails closed: a hop the model could not mask is never sent; with on_error="silence" zeros
of the same length go out instead, otherwise the service stops with exit code 3.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioFormat, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, MicProgram
from wyoming.server import AsyncEventHandler, AsyncServer

from plainsight import __version__
from plainsight.stream import FailureLog, StatusFile, StreamProcessor

WIDTH, CHANNELS = 2, 1
READ_BYTES = 2048  # 1024 samples per read from the mic command (wyoming's usual chunk)
WRITE_TIMEOUT_S = 5.0  # a client that cannot take a chunk this long is dropped
EXIT_MODEL_FAILED = 3


def mic_info(rate: int) -> Info:
    return Info(
        mic=[
            MicProgram(
                name="plainsight",
                description="microphone with emotion masking (plainsight)",
                attribution=Attribution(name="plainsight", url="https://github.com/"),
                installed=True,
                version=__version__,
                mic_format=AudioFormat(rate, WIDTH, CHANNELS),
            )
        ]
    )


class MaskedMicService:
    """Shared state of the server: the clients, the input session, the counters."""

    def __init__(
        self,
        make_masker,
        rate: int = 16000,
        hop_ms: float = 250.0,
        mic_command: str | None = None,
        mic_uri: str | None = None,
        on_error: str = "exit",
        status_path: str | None = None,
        model_name: str = "default",
        backend: str = "auto",
    ):
        if (mic_command is None) == (mic_uri is None):
            raise ValueError("give exactly one of --mic-command and --mic-uri")
        self.mic_argv = shlex.split(mic_command) if mic_command else None
        if self.mic_argv == []:
            raise ValueError("--mic-command is empty")
        self.mic_uri = mic_uri
        self.rate, self.hop_ms, self.on_error = rate, hop_ms, on_error
        self.masker = None
        self.load_error: str | None = None
        try:
            self.masker = make_masker()
            StreamProcessor(self.masker, rate, hop_ms)  # settings are valid
            model_name = ",".join(self.masker.settings()["models"])
            backend = self.masker.backend
        except Exception as exc:
            if on_error != "silence":
                raise
            self.load_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        self.status = StatusFile(status_path, model_name, backend)
        self.failures = FailureLog()
        self.counters = {
            "clients": 0,
            "sessions": 0,
            "frames": 0,
            "samples_in": 0,
            "samples_out": 0,
            "failed_hops": 0,
            "unchanged_hops": 0,
        }
        self.busy_s = 0.0
        self.clients: set[asyncio.StreamWriter] = set()
        self.session: asyncio.Task | None = None
        self.fatal: asyncio.Future | None = None  # set to the exit code to stop the service
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="plainsight-mask")

    # ----- status ------------------------------------------------------------------------
    def report(self, force: bool = False, **fields) -> None:
        self.counters["clients"] = len(self.clients)
        audio_s = self.counters["samples_out"] / self.rate
        rtf = round(self.busy_s / audio_s, 4) if audio_s else None
        self.status.update(force, **self.counters, rtf=rtf, **fields)

    def record_failure(self, exc: BaseException, n: int) -> None:
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if n:
            self.counters["failed_hops"] += 1
            self.counters["unchanged_hops"] += type(exc).__name__ == "UnmaskedHopError"
        state = "failing" if self.on_error == "silence" else "failed"
        self.report(self.failures.total == 0, last_error=message, state=state)
        self.failures.record(message)

    # ----- clients -----------------------------------------------------------------------
    async def join(self, writer: asyncio.StreamWriter) -> None:
        """A client starts listening: audio-start, then the running session's chunks."""
        start = AudioStart(self.rate, WIDTH, CHANNELS, timestamp=0).event()
        if not await self.send(writer, start):
            return
        self.clients.add(writer)
        self.report(True, state="running")
        if self.session is None or self.session.done():
            self.session = asyncio.create_task(self.run_session())

    async def drop(self, writer: asyncio.StreamWriter) -> None:
        self.clients.discard(writer)
        writer.close()
        self.report(True)
        if not self.clients and self.session is not None:
            self.session.cancel()  # nobody listens: stop the microphone and the masking
            self.session = None  # a client that comes now starts a fresh session

    async def send(self, writer: asyncio.StreamWriter, event: Event) -> bool:
        try:
            await asyncio.wait_for(async_write_event(event, writer), WRITE_TIMEOUT_S)
            return True
        except (OSError, asyncio.TimeoutError):
            self.clients.discard(writer)
            writer.close()
            return False

    async def broadcast(self, event: Event) -> None:
        clients = list(self.clients)
        results = await asyncio.gather(*(self.send(w, event) for w in clients))
        if not all(results):
            self.report(True)

    # ----- input session -----------------------------------------------------------------
    async def run_session(self) -> None:
        """Mic -> masking -> clients, until the input ends or the last client leaves."""
        self.counters["sessions"] += 1
        processor = StreamProcessor(self.masker, self.rate, self.hop_ms) if self.masker else None
        source = self.read_command() if self.mic_argv else self.read_upstream()
        started = time.monotonic()
        try:
            async for samples in source:
                self.counters["samples_in"] += len(samples)
                if processor is None:
                    self.record_failure(RuntimeError(self.load_error), len(samples))
                    await self.emit(np.zeros(len(samples), "<i2"))
                    continue
                processor.pending = np.concatenate([processor.pending, samples])
                while len(processor.pending) >= processor.hop:
                    if not await self.mask_and_emit(processor, processor.hop):
                        return
                self.report()
            if processor is not None and len(processor.pending):
                if not await self.mask_and_emit(processor, len(processor.pending)):
                    return
        except (OSError, ValueError) as exc:  # the microphone or upstream failed: no audio
            message = f"input failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
            print(f"plainsight wyoming: {message}", file=sys.stderr)
            self.report(True, last_error=message)
        finally:
            await source.aclose()
        if self.session is asyncio.current_task():
            self.session = None  # ending by itself: leaving clients must not cancel it
        self.report(True)  # before audio-stop: a client that sees the stop sees final counts
        await self.broadcast(AudioStop(timestamp=self.ms_since(started)).event())
        for writer in list(self.clients):  # input ended: clients reconnect for more
            self.clients.discard(writer)
            writer.close()
        self.report(True)

    async def mask_and_emit(self, processor: StreamProcessor, n: int) -> bool:
        hop = processor.pending[:n]
        processor.pending = processor.pending[n:]
        loop = asyncio.get_running_loop()
        busy_before = processor.busy_s
        try:
            out = await loop.run_in_executor(self.executor, processor.process, hop)
        except Exception as exc:
            self.record_failure(exc, n)
            if self.on_error != "silence":
                if self.fatal is not None and not self.fatal.done():
                    self.fatal.set_result(EXIT_MODEL_FAILED)
                return False
            out = np.zeros(n, "<i2")
        finally:
            self.busy_s += processor.busy_s - busy_before
            self.counters["frames"] += 1
        await self.emit(out)
        return True

    async def emit(self, pcm: np.ndarray) -> None:
        chunk = AudioChunk(self.rate, WIDTH, CHANNELS, pcm.astype("<i2").tobytes(), timestamp=0)
        await self.broadcast(chunk.event())
        self.counters["samples_out"] += len(pcm)

    @staticmethod
    def ms_since(start: float) -> int:
        return int(1000 * (time.monotonic() - start))

    async def read_command(self):
        """int16 sample blocks from the mic command's stdout, until EOF."""
        proc = await asyncio.create_subprocess_exec(
            *self.mic_argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        odd = b""
        try:
            while data := await proc.stdout.read(READ_BYTES):
                data = odd + data
                odd = data[len(data) - len(data) % 2 :]
                if len(data) > len(odd):
                    yield np.frombuffer(data[: len(data) - len(odd)], "<i2")
            try:  # EOF: collect its exit status (an arecord error is worth a line)
                await asyncio.wait_for(proc.wait(), 2)
            except asyncio.TimeoutError:
                pass
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            elif proc.returncode:
                message = f"mic command exited with {proc.returncode}"
                print(f"plainsight wyoming: {message}", file=sys.stderr)
                self.report(True, last_error=message)

    async def read_upstream(self):
        """int16 sample blocks from an upstream Wyoming mic service, until audio-stop/EOF."""
        client = AsyncClient.from_uri(self.mic_uri, connect_timeout=10)
        converter = AudioChunkConverter(rate=self.rate, width=WIDTH, channels=CHANNELS)
        await client.connect()
        try:
            while (event := await client.read_event()) is not None:
                if AudioStop.is_type(event.type):
                    break
                if AudioChunk.is_type(event.type):
                    chunk = converter.convert(AudioChunk.from_event(event))
                    yield np.frombuffer(chunk.audio, "<i2")
        finally:
            await client.disconnect()

    # ----- server ------------------------------------------------------------------------
    async def serve(self, uri: str, ready=None) -> int:
        """Listen on `uri` until SIGTERM/SIGINT (0) or a model failure in exit mode (3)."""
        loop = asyncio.get_running_loop()
        self.fatal = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: self.fatal.done() or self.fatal.set_result(0))
        server = AsyncServer.from_uri(uri)
        server_handler = _handler_factory(self)
        await server.start(server_handler)
        if self.load_error:
            self.record_failure(RuntimeError(self.load_error), 0)
        else:
            self.report(True, state="running")
        print(f"plainsight wyoming: listening on {uri}", file=sys.stderr, flush=True)
        if ready is not None:
            ready()
        try:
            while not self.fatal.done():
                await asyncio.wait({self.fatal}, timeout=2.0)
                self.report()
            code = self.fatal.result()
        finally:
            if self.session is not None and not self.session.done():
                self.session.cancel()
                await asyncio.gather(self.session, return_exceptions=True)
            for writer in list(self.clients):
                writer.close()
            await server.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.executor.shutdown(wait=False)
            self.failures.summary()
        self.report(True, state="failed" if code else "stopped")
        return code


def _handler_factory(service: MaskedMicService):
    class Handler(AsyncEventHandler):
        """One client: describe -> info; the audio starts as soon as it connects."""

        def __init__(self, reader, writer):
            super().__init__(reader, writer)
            self.joined = asyncio.ensure_future(service.join(writer))

        async def handle_event(self, event: Event) -> bool:
            if Describe.is_type(event.type):
                await self.joined
                return await service.send(self.writer, mic_info(service.rate).event())
            return True

        async def disconnect(self) -> None:
            await asyncio.gather(self.joined, return_exceptions=True)
            await service.drop(self.writer)

    return Handler
