"""Hand-written judged queries for the demo's standard-library corpus.

Each entry is a query a user might type and the documents that answer it, by **title**
(the dotted name, e.g. ``shutil.rmtree``): 2 = the answer, 1 = useful as well. The demo
indexes with numeric ids and maps titles to ids at run time. Every title exists in the
corpus built on Python 3.11 (``tests/test_demo.py`` checks it).

The first :data:`SHOWCASE` queries are the ones shown side by side.
"""

from __future__ import annotations

__all__ = ["JUDGED", "SHOWCASE"]

JUDGED: list[tuple[str, dict[str, int]]] = [
    (
        "parse command line arguments",
        {
            "argparse.ArgumentParser": 2,
            "argparse": 2,
            "getopt": 1,
            "getopt.getopt": 1,
            "getopt.gnu_getopt": 1,
            "optparse": 1,
            "optparse.OptionParser": 1,
        },
    ),
    ("delete a directory and everything in it", {"shutil.rmtree": 2}),
    (
        "run a shell command and capture its output",
        {
            "subprocess.run": 2,
            "subprocess.check_output": 2,
            "subprocess.getoutput": 2,
            "subprocess.getstatusoutput": 1,
            "subprocess.Popen": 1,
        },
    ),
    (
        "remember the results of an expensive function call",
        {"functools.lru_cache": 2, "functools.cache": 2},
    ),
    ("copy a whole folder with all its files", {"shutil.copytree": 2}),
    ("locate an executable program on the PATH", {"shutil.which": 2}),
    ("how much free space is left on the disk", {"shutil.disk_usage": 2}),
    (
        "create a temporary directory that cleans itself up",
        {"tempfile.TemporaryDirectory": 2, "tempfile.mkdtemp": 1},
    ),
    ("read a gzip compressed file", {"gzip.open": 2, "gzip.GzipFile": 2, "gzip.decompress": 1}),
    ("compute a quick checksum of some bytes", {"zlib.crc32": 2, "zlib.adler32": 2}),
    ("hash the contents of a file", {"hashlib.file_digest": 2, "hashlib.new": 1, "hashlib": 1}),
    (
        "sign a message with a secret key",
        {"hmac.new": 2, "hmac.digest": 2, "hmac.HMAC": 2, "hmac": 1},
    ),
    (
        "split a web address into scheme host and path",
        {"urllib.parse.urlparse": 2, "urllib.parse.urlsplit": 2},
    ),
    (
        "escape spaces and special characters in a url",
        {"urllib.parse.quote": 2, "urllib.parse.quote_plus": 2},
    ),
    (
        "download a web page to a local file",
        {"urllib.request.urlretrieve": 2, "urllib.request.urlopen": 1},
    ),
    ("suggest the closest matching word for a typo", {"difflib.get_close_matches": 2}),
    (
        "show what changed between two versions of a text",
        {
            "difflib.unified_diff": 2,
            "difflib.context_diff": 2,
            "difflib.ndiff": 2,
            "difflib.Differ": 1,
        },
    ),
    (
        "wrap long text to a fixed line width",
        {"textwrap.wrap": 2, "textwrap.fill": 2, "textwrap.TextWrapper": 2},
    ),
    ("remove the common indentation from a block of text", {"textwrap.dedent": 2}),
    ("get the biggest n items from a list", {"heapq.nlargest": 2}),
    ("count how many times each item appears", {"collections.Counter": 2}),
    ("call a function after a delay", {"threading.Timer": 2}),
    ("replace ~ with the user's home folder", {"os.path.expanduser": 2}),
    ("guess the delimiter of a csv file", {"csv.Sniffer": 2}),
    ("send an email over an encrypted connection", {"smtplib.SMTP_SSL": 2, "smtplib.SMTP": 1}),
]

#: how many of the first :data:`JUDGED` queries the demo shows side by side
SHOWCASE = 4
