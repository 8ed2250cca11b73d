"""P7's comparator: every row of a CSV file (item,name,unit) sent as one M3
MMS200MI/AddItmBasic transaction, one after the other, the usual way with
`requests`: a backend-service token from the .ionapi file, then a GET per
record, each answer checked for HTTP errors and for M3's own
`nrOfFailedTransactions`; the refresh token revoked at the end. Exits 1 if
any record failed.

usage: m3_add_items.py SIM.ionapi ITEMS.csv
"""
import csv
import json
import sys

import requests


def main():
    with open(sys.argv[1]) as f:
        ionapi = json.load(f)
    session = requests.Session()
    token = session.post(
        ionapi["pu"] + ionapi["ot"],
        data={
            "grant_type": "password",
            "username": ionapi["saak"],
            "password": ionapi["sask"],
            "client_id": ionapi["ci"],
            "client_secret": ionapi["cs"],
        },
        timeout=60,
    )
    token.raise_for_status()
    tokens = token.json()
    headers = {
        "Accept": "application/json",
        "Authorization": f"Bearer {tokens['access_token']}",
    }
    url = f"{ionapi['iu']}/{ionapi['ti']}/M3/m3api-rest/v2/execute/MMS200MI/AddItmBasic"
    failed = 0
    with open(sys.argv[2], newline="") as f:
        for row in csv.DictReader(f):
            response = session.get(
                url,
                params={"ITNO": row["item"], "ITDS": row["name"], "UNMS": row["unit"]},
                headers=headers,
                timeout=60,
            )
            response.raise_for_status()
            if response.json().get("nrOfFailedTransactions"):
                failed += 1
    if tokens.get("refresh_token"):
        session.post(
            ionapi["pu"] + ionapi["or"],
            data={
                "token": tokens["refresh_token"],
                "token_type_hint": "refresh_token",
                "client_id": ionapi["ci"],
                "client_secret": ionapi["cs"],
            },
            timeout=60,
        ).raise_for_status()
    if failed:
        sys.exit(f"{failed} records failed")


if __name__ == "__main__":
    main()
