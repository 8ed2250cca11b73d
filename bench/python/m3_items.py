"""P6's comparator: every item of MMS200MI/LstItmByItm, paged by key the way
ionflow's m3_list source pages (a continuation page starts at the last key,
asks for one record more and drops the repeated first one), each record
reshaped as the pipeline's jq filter does, written as JSON Lines; the
refresh token revoked at the end.

usage: m3_items.py SIM.ionapi OUT.jsonl PAGE_SIZE
"""
import json
import sys

import requests


def main():
    with open(sys.argv[1]) as f:
        ionapi = json.load(f)
    page_size = int(sys.argv[3])
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
    url = f"{ionapi['iu']}/{ionapi['ti']}/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm"
    next_key = None
    with open(sys.argv[2], "w") as out:
        while True:
            params = {"maxrecs": str(page_size if next_key is None else page_size + 1)}
            if next_key is not None:
                params["ITNO"] = next_key
            response = session.get(url, params=params, headers=headers, timeout=60)
            response.raise_for_status()
            body = response.json()
            if body.get("nrOfFailedTransactions"):
                sys.exit(f"M3 error: {body}")
            records = body["results"][0]["records"]
            fetched = len(records)
            if next_key is not None and records and records[0].get("ITNO") == next_key:
                records = records[1:]
            for r in records:
                out.write(
                    json.dumps(
                        {
                            "item": r["ITNO"],
                            "description": r["ITDS"],
                            "type": r["ITTY"],
                            "active": r["STAT"] == "20",
                        }
                    )
                    + "\n"
                )
            if fetched < int(params["maxrecs"]) or not records:
                break
            next_key = records[-1]["ITNO"]
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


if __name__ == "__main__":
    main()
