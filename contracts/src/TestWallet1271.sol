// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title TestWallet1271
/// @notice A one-owner smart wallet for tests: a signature is valid (EIP-1271) when it is the
/// owner's 65-byte ECDSA signature over the hash as given.
contract TestWallet1271 {
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        address signer = ecrecover(hash, v, r, s);
        return (signer != address(0) && signer == owner) ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}

/// @title TestWalletFactory
/// @notice Deploys TestWallet1271 at a CREATE2 address, so a wallet can sign before it exists
/// (the ERC-6492 counterfactual case).
contract TestWalletFactory {
    function deploy(address owner, bytes32 salt) external returns (address wallet) {
        wallet = address(new TestWallet1271{salt: salt}(owner));
    }

    function predict(address owner, bytes32 salt) external view returns (address) {
        bytes32 codeHash = keccak256(abi.encodePacked(type(TestWallet1271).creationCode, abi.encode(owner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, codeHash)))));
    }
}
