"""P3's comparator: what ionflow's one-call pipeline does, written the usual
way with `requests`: a backend-service token from the .ionapi file, one M3
call, its records to JSON Lines, and the refresh token revoked at the end.

usage: one_call.py SIM.ionapi OUT.jsonl
"""
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
    response = session.get(
        f"{ionapi['iu']}/{ionapi['ti']}/M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic",
        params={"ITNO": "ITM000042"},
        headers={
            "Accept": "application/json",
            "Authorization": f"Bearer {tokens['access_token']}",
        },
        timeout=60,
    )
    response.raise_for_status()
    records = response.json()["results"][0]["records"]
    with open(sys.argv[2], "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
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
