// Initiates the one-node replica set `rs0` of the compose deployment, then waits until this
// node is primary (transactions need one). Idempotent: run again, it finds the set initiated.
// The member's host is the compose service name, the address every client in the network
// uses (mongodb://mongodb:27017/?replicaSet=rs0).
const config = { _id: "rs0", members: [{ _id: 0, host: "mongodb:27017" }] };

try {
  const status = rs.status();
  print(`replica set ${status.set} already initiated`);
} catch (error) {
  if (error.codeName !== "NotYetInitialized") {
    throw error;
  }
  rs.initiate(config);
  print("replica set rs0 initiated");
}

for (let second = 0; second < 120; second++) {
  if (db.hello().isWritablePrimary) {
    print("primary ready");
    quit(0);
  }
  sleep(1000);
}
print("no primary after 120 s");
quit(1);
