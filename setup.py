"""Packaging for the b2bua switch: the SIP stack, the core and its layers."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="b2bua",
    version="0.1.0.dev0",
    description="Carrier-grade SIP B2BUA on Twisted: hosted PBX, SIP trunking, calling cards",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=[
        *find_packages(include=["b2bua", "b2bua.*", "plugins", "plugins.*", "media", "media.*",
                                "nat", "nat.*", "rating", "rating.*", "oam", "oam.*"]),
        "twisted.plugins",
    ],
    package_data={"twisted": ["plugins/b2bua_plugin.py"], "media.server": ["flows/*.toml"]},
    install_requires=[
        "twisted[tls]>=24.7",
        "pyopenssl>=24.0",
        "pluggy>=1.5",
        "prometheus-client>=0.20",
        "txredisapi>=1.4.10",
        "treq>=23.11",
        "psycopg[binary]>=3.1",
        "phonenumbers>=8.13",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.100",
            "import-linter>=2.0",
            "ruff>=0.5",
            "schemathesis>=4.32,<5",
        ],
    },
    entry_points={"console_scripts": ["b2bua-admin = b2bua.admin.cli:main"]},
)
